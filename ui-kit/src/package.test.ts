// @vitest-environment node
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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

/**
 * `npm pack --dry-run` of a copy laid out as in the repository, without the node_modules or dist/
 * a developer may have lying around; `prepare` may add files to the copy first. The packed paths,
 * and the copy's package.json.
 */
function packedCopy(prepare: (packageDir: string) => void = () => undefined) {
  workDir = mkdtempSync(join(tmpdir(), 'tollgate-react-pack-'));
  const packageDir = join(workDir, 'ui-kit');
  cpSync(join(repoDir, 'tsconfig.base.json'), join(workDir, 'tsconfig.base.json'));
  cpSync(kitDir, packageDir, {
    recursive: true,
    filter: (source) => !relative(kitDir, source).split(sep).some((part) => part === 'node_modules' || part === 'dist'),
  });
  symlinkSync(join(repoDir, 'node_modules'), join(workDir, 'node_modules'), 'dir');
  prepare(packageDir);
  const output = execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: packageDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const [packed] = JSON.parse(output) as { files: { path: string }[] }[];
  const manifest = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as Parameters<typeof promisedPaths>[0];
  return { files: packed?.files.map((file) => file.path) ?? [], manifest };
}

describe('the package as npm packs it', () => {
  it('holds every file its package.json names, packed from a fresh checkout (no dist/ built beforehand)', () => {
    const { files, manifest } = packedCopy();
    expect(promisedPaths(manifest)).toEqual(expect.arrayContaining(['dist/index.js', 'dist/index.d.ts']));
    for (const path of promisedPaths(manifest)) expect(files, path).toContain(path);
    expect(files.filter((path) => /\.test\./.test(path))).toEqual([]);
  }, 120_000);

  it('packs only what this build wrote: output of a source since removed, left in dist/, is not shipped', () => {
    const { files } = packedCopy((packageDir) => {
      // What an earlier build of a component since deleted would have left.
      mkdirSync(join(packageDir, 'dist', 'components'), { recursive: true });
      writeFileSync(join(packageDir, 'dist', 'components', 'Removed.js'), 'export const Removed = 1;\n');
    });
    expect(files).toContain('dist/index.js');
    expect(files).not.toContain('dist/components/Removed.js');
  }, 120_000);
});
