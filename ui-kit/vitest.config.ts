import { defineConfig } from 'vitest/config';

// No React plugin: Vite's transform reads `"jsx": "react-jsx"` from tsconfig.json and
// compiles .tsx with the automatic runtime.
export default defineConfig({
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
    setupFiles: ['./test/setup.ts'],
    // Tests stub fetch with vi.stubGlobal; this puts the real one back after each test.
    unstubGlobals: true,
  },
});
