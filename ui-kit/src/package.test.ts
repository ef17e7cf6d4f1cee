// @vitest-environment node
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const kitDir = fileURLToPath(new URL('..', import.meta.url));
const repoDir = join(kitDir, '..');

/** The paths package.json sends consumers to: main, types and every target in exports. */
function promisedPaths(manifest: { main?: string; types?: string; exports?: unknown }): string[] {
  const targets: string[] = [];
  const collect = (entry: unknown): void => {
    if (typeof entry === 'string') targets.push(entry);
    else if (entry && typeof entry === 'object') Object.values(entry).forEach(collect);
  };
  collect([manifest.main, manifest.types, manifest.exports]);
  return [...new Set(targets.map((target) => target.replace(/^\.\//, '')))];
}

let workDir: string | undefined;
afterEach(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  workDir = undefined;
});

describe('the package as npm packs it', () => {
  it('holds every file its package.json names, packed from a fresh checkout (no dist/ built beforehand)', () => {
    // A copy laid out as in the repository, without the build output a developer may have lying around.
    workDir = mkdtempSync(join(tmpdir(), 'tollgate-react-pack-'));
    const packageDir = join(workDir, 'ui-kit');
    cpSync(join(repoDir, 'tsconfig.base.json'), join(workDir, 'tsconfig.base.json'));
    cpSync(kitDir, packageDir, {
      recursive: true,
      filter: (source) => !relative(kitDir, source).split(sep).some((part) => part === 'node_modules' || part === 'dist'),
    });
    symlinkSync(join(repoDir, 'node_modules'), join(workDir, 'node_modules'), 'dir');

    const output = execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: packageDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const [packed] = JSON.parse(output) as { files: { path: string }[] }[];
    const files = packed?.files.map((file) => file.path) ?? [];
    const manifest = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as Parameters<typeof promisedPaths>[0];

    expect(promisedPaths(manifest)).toEqual(expect.arrayContaining(['dist/index.js', 'dist/index.d.ts']));
    for (const path of promisedPaths(manifest)) expect(files, path).toContain(path);
    expect(files.filter((path) => /\.test\./.test(path))).toEqual([]);
  }, 120_000);
});
