import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Two cores: TensorFlow and the servers already use both; running files one at a time keeps
    // timings stable and memory bounded.
    fileParallelism: false,
    pool: 'forks',
  },
});
