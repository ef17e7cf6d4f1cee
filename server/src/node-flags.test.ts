import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { SERVER_NODE_FLAGS } from './node-flags.ts';

it('npm start runs the server with the Node flags the benchmarks measure it with', () => {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
  const start = manifest.scripts.start!.split(/\s+/);
  expect(start.slice(0, 1 + SERVER_NODE_FLAGS.length)).toEqual(['tsx', ...SERVER_NODE_FLAGS]);
  expect(start.at(-1)).toBe('src/main.ts');
});
