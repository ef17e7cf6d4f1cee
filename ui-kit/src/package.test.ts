// @vitest-environment node
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
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
  return { files: packed?.files.map((file) => file.path) ?? [], manifest, packageDir };
}

/**
 * Installs what `packedCopy` packed the way npm would: only the packed files, under
 * node_modules/@tollgate/react of a consumer app. The app sits in the copy's work directory, so
 * react and @tanstack/react-query resolve from the repository's node_modules as peers do.
 * Returns the app's directory.
 */
function installPacked({ files, packageDir }: { files: string[]; packageDir: string }): string {
  const appDir = join(workDir!, 'app');
  const installDir = join(appDir, 'node_modules', '@tollgate', 'react');
  for (const path of files) {
    mkdirSync(dirname(join(installDir, path)), { recursive: true });
    cpSync(join(packageDir, path), join(installDir, path));
  }
  return appDir;
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

  it('can be require()d by CommonJS, and require and import share one copy of the kit', () => {
    const appDir = installPacked(packedCopy());
    // A second copy would mean a second TollgateContext: a provider from one copy is invisible
    // to hooks from the other.
    writeFileSync(
      join(appDir, 'consumer.cjs'),
      `const required = require('@tollgate/react');
import('@tollgate/react').then((imported) => {
  process.stdout.write(JSON.stringify({
    provider: typeof required.TollgateProvider,
    sameCopy: imported.TollgateProvider === required.TollgateProvider,
  }));
});
`,
    );

    // The node running these tests: engines promises require(esm) from 20.19 on.
    const output = execFileSync(process.execPath, ['consumer.cjs'], { cwd: appDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

    expect(JSON.parse(output)).toEqual({ provider: 'function', sameCopy: true });
  }, 120_000);

  it('gives TypeScript its types for require and for import (module nodenext)', () => {
    const appDir = installPacked(packedCopy());
    // nodenext (and node20) model require(esm), so a CommonJS file may require this ES module;
    // node16 and node18 model Node versions without it and refuse the require (TS1471).
    writeFileSync(join(appDir, 'required.cts'), "import kit = require('@tollgate/react');\nexport const provider: typeof kit.TollgateProvider = kit.TollgateProvider;\n");
    writeFileSync(join(appDir, 'imported.mts'), "import { TollgateProvider } from '@tollgate/react';\nexport const provider: typeof TollgateProvider = TollgateProvider;\n");
    writeFileSync(join(appDir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', strict: true, noEmit: true, types: [], skipLibCheck: true }, files: ['required.cts', 'imported.mts'] }));
    const tsc = join(repoDir, 'node_modules', 'typescript', 'bin', 'tsc');

    // Strict mode fails a specifier it has no types for (TS7016): a clean run means both resolved.
    const run = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: appDir, encoding: 'utf8' });

    expect({ status: run.status, output: run.stdout + run.stderr }).toEqual({ status: 0, output: '' });
  }, 120_000);
});
