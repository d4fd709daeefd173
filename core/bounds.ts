/**
 * Upper bounds of config fields. A value past one is refused before anything runs, with a message
 * that says what the limit protects (a worker's memory, a shard's upload, the event loop), so a typo
 * such as batchSize 1e8 is a clear error instead of an out-of-memory kill an hour later.
 */
export function limitMessage(max: number, protects: string): string {
  return `at most ${max.toLocaleString('en-US')}: ${protects}`;
}

/** Most pixels (width × height) of one source image: checked from the file's header before decoding. */
export const MAX_IMAGE_PIXELS_CEILING = 268_402_689; // sharp/libvips' own ceiling (0x3FFF × 0x3FFF)
export const DEFAULT_MAX_IMAGE_PIXELS = 64_000_000;
