import { Client, Connection } from '@temporalio/client';
import { temporalConnection, type Connection as ConnInfo } from './env.js';

export function connectionHelp(conn: ConnInfo, err: unknown): string {
  return (
    `cannot reach Temporal at ${conn.temporalAddress} (from ${conn.source}): ${(err as Error).message.split('\n')[0]}\n` +
    `Start the local services with 'densepipe up', or set TEMPORAL_ADDRESS=host:port for another server.`
  );
}

export async function connectClient(): Promise<{ client: Client; conn: ConnInfo; close: () => Promise<void> }> {
  const conn = temporalConnection();
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: conn.temporalAddress, connectTimeout: '5s' });
  } catch (err) {
    throw new Error(connectionHelp(conn, err));
  }
  return { client: new Client({ connection, namespace: conn.namespace }), conn, close: () => connection.close() };
}
