import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import type { Meter, Plan, PriceRule, ProviderPrice } from '../../generated/prisma/client.ts';
import { AppError } from '../../shared/errors.ts';
import { applyPricingChanges, describeChanges, planPricingConfig, type Change, type PricingConfig } from './config-apply.ts';
import { priceInForce } from './cost.ts';
import { toPrice, type PriceWithRef } from './prices.service.ts';
import { CONCURRENT_NOW_MS } from './pricing-time.ts';
import { rulesInForce } from './rules.service.ts';

/**
 * Property-based checks that the diff `npm run tollgate -- apply` shows is what applying does.
 * Merchants are brought to random states by applying random valid documents and by changes made
 * through GraphQL (a rule put or archived, a meter archived or restored, a price set from now or
 * for a later date, a plan archived or renamed); then a random next document is planned and:
 * (a) applying writes exactly the planned changes: each change is its row (a meter or plan
 *     created or updated, a rule version or price row added with its effective date, a scheduled
 *     price replaced or deleted) and no other row is created, updated or deleted; a dry run (the
 *     plan alone) writes nothing;
 * (b) the text the CLI prints (describeChanges, as cli.ts applyConfig prints it) has one entry per
 *     change, in order, whose header says what happens (+ new, ~ new version / update, - cancelled)
 *     and whose "- before" / "+ after" values are the rows before and after, read from the database;
 * (c) with the database changed between plan and apply (another apply, or a GraphQL change), the
 *     apply writes exactly what the plan listed and every "- before" it showed still held, or it is
 *     refused with a typed error and writes nothing (applyPricingChanges: one transaction; a version
 *     written since the plan would be overridden unseen, so it is refused);
 * (d) after every step, the rule and price versions in force at instants before it (each version's
 *     own boundaries and random ones) are the same rows with the same settings as they were.
 * Seeded (FUZZ_SEED, default fixed) and replayable: a failure prints the seed and path.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const SEED = Number(process.env.FUZZ_SEED ?? 20_260_601);
const fuzzOptions = (numRuns: number) => ({
  seed: SEED,
  ...(process.env.FUZZ_PATH ? { path: process.env.FUZZ_PATH } : {}),
  numRuns: Number(process.env.FUZZ_RUNS ?? numRuns),
  endOnFailure: process.env.FUZZ_SHRINK !== '1',
});

// ---------------------------------------------------------------------------------------------
// Database state, read past the services' caches.

interface Dump {
  meters: Meter[];
  plans: Plan[];
  rules: PriceRule[];
  prices: ProviderPrice[];
}

async function dump(merchantId: string): Promise<Dump> {
  const { prisma } = server.services;
  const where = { merchantId };
  const orderBy = { id: 'asc' } as const;
  return {
    meters: await prisma.meter.findMany({ where, orderBy }),
    plans: await prisma.plan.findMany({ where, orderBy }),
    rules: await prisma.priceRule.findMany({ where, orderBy }),
    prices: await prisma.providerPrice.findMany({ where, orderBy }),
  };
}

const rowText = (row: object) => JSON.stringify(row, (_key, value: unknown) => (value instanceof Date ? value.toISOString() : value));

function diffRows<T extends { id: string }>(before: readonly T[], after: readonly T[]) {
  const old = new Map(before.map((row) => [row.id, row]));
  const now = new Map(after.map((row) => [row.id, row]));
  return {
    created: after.filter((row) => !old.has(row.id)),
    updated: after.flatMap((row) => (old.has(row.id) && rowText(old.get(row.id)!) !== rowText(row) ? [[old.get(row.id)!, row] as const] : [])),
    deleted: before.filter((row) => !now.has(row.id)),
  };
}

/**
 * A value as settings compare: keys sorted, empty ones dropped, whole numbers and decimal text
 * in their shortest form ("4.50" and 4.5 are "4.5"). Independent of config-apply.ts's own.
 */
function norm(value: unknown): unknown {
  if (typeof value === 'number') return norm(String(value));
  if (typeof value === 'string') {
    const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value);
    if (!match) return value;
    const whole = match[2]!.replace(/^0+(?=\d)/, '');
    const fraction = (match[3] ?? '').replace(/0+$/, '');
    return `${match[1]}${whole}${fraction ? `.${fraction}` : ''}`;
  }
  if (Array.isArray(value)) return value.map(norm);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, inner]) => inner != null)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([key, inner]) => [key, norm(inner)]),
    );
  }
  return value;
}

const sameModel = (row: { provider: string; model: string }, provider: string, model: string) =>
  row.provider.toLowerCase() === provider.toLowerCase() && row.model.trim().toLowerCase() === model.trim().toLowerCase();
/** A stored price as the diff shows it: its rates with provider, model and currency. */
const shownPrice = (row: ProviderPrice) => {
  const { effectiveFrom: _e, ref: _r, ...rates } = toPrice(row);
  return norm(rates);
};
const shownRule = (row: Pick<PriceRule, 'type' | 'meterKey' | 'provider' | 'model'> & { config: unknown }) => norm({ type: row.type, meterKey: row.meterKey, provider: row.provider, model: row.model, config: row.config });
const shownMeter = (row: Meter) => norm({ name: row.name, unit: row.unit, source: row.source, aggregation: row.aggregation, archived: row.archivedAt ? true : null });
const shownPlan = (row: Plan) => norm({ name: row.name, description: row.description, archived: row.archivedAt ? true : null });
const planIdOf = (state: Dump, key: string | null) => (key === null ? null : (state.plans.find((plan) => plan.key === key)?.id ?? `no plan ${key}`));
/** The version of a rule in force just before `at`, among `rows` (a book's, as stored before the apply). */
const ruleBefore = (rows: readonly PriceRule[], planId: string | null, name: string, at: Date) =>
  rulesInForce(rows.filter((row) => row.planId === planId && row.name === name), new Date(at.getTime() - 1))[0] ?? null;
const priceBefore = (rows: readonly ProviderPrice[], provider: string, model: string, at: Date): PriceWithRef | null =>
  priceInForce(rows.map(toPrice), provider, model, new Date(at.getTime() - 1));

// ---------------------------------------------------------------------------------------------
// (a) and (c): what an apply wrote is exactly what its plan listed.

interface Window {
  start: Date;
  end: Date;
}

/** Each change's row in `after`: created, updated or deleted as the change says, with its values; nothing else changed. */
function expectWritesMatch(before: Dump, after: Dump, changes: readonly Change[], window: Window, label: string, race = false) {
  const meters = diffRows(before.meters, after.meters);
  const plans = diffRows(before.plans, after.plans);
  const rules = diffRows(before.rules, after.rules);
  const prices = diffRows(before.prices, after.prices);
  const used = new Set<string>();
  const take = <T extends { id: string }>(what: string, row: T | undefined): T => {
    expect(row, `${label}: ${what} has no row written for it`).toBeDefined();
    expect(used.has(row!.id), `${label}: ${what} shares its row with another change`).toBe(false);
    used.add(row!.id);
    return row!;
  };
  const fromNow = (what: string, at: Date) => {
    expect(at >= window.start && at.getTime() <= window.end.getTime() + CONCURRENT_NOW_MS, `${label}: ${what} effective ${at.toISOString()}, not from the apply's now`).toBe(true);
  };
  for (const change of changes) {
    const what = `${change.kind} ${change.key}`;
    switch (change.kind) {
      case 'create-meter': {
        const row = take(what, meters.created.find((meter) => meter.key === change.key));
        const { name, unit, source, aggregation } = change.detail;
        expect({ name: row.name, unit: row.unit, source: row.source, aggregation: row.aggregation, archivedAt: row.archivedAt }, what).toEqual({ name, unit, source, aggregation: aggregation ?? 'SUM', archivedAt: null });
        break;
      }
      case 'update-meter': {
        // After a race the meter may already hold the file's values (put by the apply in between): then nothing is written.
        const [old, row] = meters.updated.find(([meter]) => meter.key === change.key) ?? (race ? [after.meters.find((meter) => meter.key === change.key)!, undefined] : []);
        if (row || !race) take(what, row);
        const written = row ?? old!;
        const { name, unit, aggregation } = change.detail;
        expect({ name: written.name, unit: written.unit, source: written.source, aggregation: written.aggregation, archivedAt: written.archivedAt }, what).toEqual({ name, unit, source: old!.source, aggregation: aggregation ?? 'SUM', archivedAt: null });
        break;
      }
      case 'create-plan': {
        // plans.put takes a plan created since the plan was made as its own (not refused, as a meter is): after a race, it may be updated or as wanted already.
        const existing = race ? after.plans.find((plan) => plan.key === change.key && !plans.created.includes(plan)) : undefined;
        const row = existing ? (plans.updated.some(([, plan]) => plan.id === existing.id) ? take(what, existing) : existing) : take(what, plans.created.find((plan) => plan.key === change.key));
        expect({ name: row.name, description: row.description, archivedAt: row.archivedAt }, what).toEqual({ name: change.detail.name, description: change.detail.description ?? null, archivedAt: null });
        break;
      }
      case 'update-plan': {
        const [, updated] = plans.updated.find(([plan]) => plan.key === change.key) ?? [];
        if (updated || !race) take(what, updated);
        const row = updated ?? after.plans.find((plan) => plan.key === change.key);
        expect({ name: row!.name, description: row!.description, archivedAt: row!.archivedAt }, what).toEqual({ name: change.detail.name, description: change.detail.description ?? null, archivedAt: null });
        break;
      }
      case 'add-rule': {
        const planId = planIdOf(after, change.plan);
        const row = take(what, rules.created.find((rule) => rule.planId === planId && rule.name === change.detail.name && !used.has(rule.id)));
        expect(shownRule(row), what).toEqual(shownRule({ meterKey: null, provider: null, model: null, ...change.detail }));
        expect(row.archivedAt, what).toBeNull();
        fromNow(what, row.effectiveFrom);
        // The new version: after every version of its name (history is never rewritten).
        for (const old of before.rules.filter((rule) => rule.planId === planId && rule.name === row.name)) expect(old.effectiveFrom < row.effectiveFrom, `${what}: not after ${old.effectiveFrom.toISOString()}`).toBe(true);
        break;
      }
      case 'add-price': {
        const { provider, model } = change.detail;
        const ofModel = (row: ProviderPrice) => sameModel(row, provider, model) && !used.has(row.id);
        let row: ProviderPrice;
        if (change.effectiveFrom) {
          const at = Date.parse(change.effectiveFrom);
          // A scheduled version the plan saw stored at that date is replaced (it has priced nothing); else one is added.
          const pool = change.from === null ? prices.created : prices.updated.map(([, updated]) => updated);
          row = take(what, pool.find((candidate) => ofModel(candidate) && candidate.effectiveFrom.getTime() === at));
        } else {
          // The one not at a date of its own: from the apply's now.
          const dated = new Set(changes.flatMap((other) => (other.kind === 'add-price' && other.effectiveFrom ? [Date.parse(other.effectiveFrom)] : [])));
          row = take(what, prices.created.find((candidate) => ofModel(candidate) && !dated.has(candidate.effectiveFrom.getTime())));
          fromNow(what, row.effectiveFrom);
        }
        const { effectiveFrom: _e, ...rates } = change.detail;
        expect(shownPrice(row), what).toEqual(norm({ currency: 'USD', ...rates }));
        break;
      }
      case 'cancel-price':
        take(what, prices.deleted.find((row) => row.id === change.ref));
        break;
    }
  }
  const written = [
    ...meters.created.map((row) => [row.id, `created meter ${row.key}`]),
    ...meters.updated.map(([, row]) => [row.id, `updated meter ${row.key}`]),
    ...plans.created.map((row) => [row.id, `created plan ${row.key}`]),
    ...plans.updated.map(([, row]) => [row.id, `updated plan ${row.key}`]),
    ...rules.created.map((row) => [row.id, `created rule ${row.name}`]),
    ...rules.updated.map(([, row]) => [row.id, `updated rule ${row.name}`]),
    ...rules.deleted.map((row) => [row.id, `deleted rule ${row.name}`]),
    ...prices.created.map((row) => [row.id, `created price ${row.model}@${row.effectiveFrom.toISOString()}`]),
    ...prices.updated.map(([, row]) => [row.id, `updated price ${row.model}@${row.effectiveFrom.toISOString()}`]),
    ...prices.deleted.map((row) => [row.id, `deleted price ${row.model}@${row.effectiveFrom.toISOString()}`]),
  ] as [string, string][];
  expect(written.filter(([id]) => !used.has(id)).map(([, what]) => what), `${label}: written but not in the plan`).toEqual([]);
}

// ---------------------------------------------------------------------------------------------
// (b): the printed diff names each change with the rows before and after.

interface Entry {
  header: string;
  minus: unknown[];
  plus: unknown[];
}

/** describeChanges' text as entries: a header line, then "    - json" / "    + json" lines. */
function parseDiff(text: string): Entry[] {
  const entries: Entry[] = [];
  for (const line of text.split('\n')) {
    const value = /^ {4}([-+]) (.*)$/.exec(line);
    if (!value) {
      entries.push({ header: line, minus: [], plus: [] });
      continue;
    }
    const entry = entries.at(-1);
    expect(entry, `value line before any header: ${line}`).toBeDefined();
    entry![value[1] === '-' ? 'minus' : 'plus'].push(norm(JSON.parse(value[2]!)));
  }
  return entries;
}

/**
 * `before`: the rows just before the apply, which the diff's "-" values must be. After a race
 * (`race`), only prices are held to that, as applyPricingChanges promises (a price written since
 * the plan is not overridden unseen); the "-" of a meter, plan or rule may be stale then, and only
 * the "+" values are checked.
 */
function expectDiffTells(text: string, changes: readonly Change[], before: Dump, after: Dump, label: string, race = false) {
  if (changes.length === 0) {
    expect(text).toBe('No changes: what the file lists is already in force.');
    return;
  }
  const entries = parseDiff(text);
  expect(entries.map((entry) => entry.header.split(' ').slice(0, 3).join(' ')), `${label}: one entry per change`).toHaveLength(changes.length);
  for (const [index, change] of changes.entries()) {
    const entry = entries[index]!;
    const what = `${label}: ${entry.header}`;
    if (race && change.kind !== 'add-price' && change.kind !== 'cancel-price') {
      const row =
        change.kind === 'add-rule'
          ? shownRule(after.rules.find((rule) => rule.planId === planIdOf(after, change.plan) && rule.name === change.detail.name && !before.rules.some((old) => old.id === rule.id))!)
          : change.kind === 'create-plan' || change.kind === 'update-plan'
            ? shownPlan(after.plans.find((plan) => plan.key === change.key)!)
            : norm({ ...(shownMeter(after.meters.find((meter) => meter.key === change.key)!) as object), archived: null });
      expect(entry.header, what).toContain(change.kind === 'add-rule' ? `rule "${change.key}"` : ` ${change.key}`);
      expect(entry.plus, what).toEqual([row]);
      continue;
    }
    switch (change.kind) {
      case 'create-meter': {
        expect(before.meters.some((meter) => meter.key === change.key), what).toBe(false);
        expect(entry.header, what).toBe(`+ meter ${change.key}`);
        const row = after.meters.find((meter) => meter.key === change.key)!;
        expect(entry, what).toMatchObject({ minus: [], plus: [norm({ ...(shownMeter(row) as object), archived: null })] });
        break;
      }
      case 'update-meter': {
        expect(entry.header, what).toBe(`~ meter ${change.key}`);
        const old = before.meters.find((meter) => meter.key === change.key)!;
        const row = after.meters.find((meter) => meter.key === change.key)!;
        expect(entry, what).toMatchObject({ minus: [shownMeter(old)], plus: [shownMeter(row)] });
        break;
      }
      case 'create-plan':
      case 'update-plan': {
        const old = before.plans.find((plan) => plan.key === change.key);
        const row = after.plans.find((plan) => plan.key === change.key)!;
        expect(entry.header, what).toBe(`${old ? '~' : '+'} plan ${change.key}`);
        expect(entry, what).toMatchObject({ minus: old ? [shownPlan(old)] : [], plus: [shownPlan(row)] });
        break;
      }
      case 'add-rule': {
        const planId = planIdOf(after, change.plan);
        const row = after.rules.find((rule) => rule.planId === planId && rule.name === change.detail.name && !before.rules.some((old) => old.id === rule.id))!;
        const old = ruleBefore(before.rules, planId, row.name, row.effectiveFrom);
        const key = change.plan === null ? row.name : `${change.plan}/${row.name}`;
        expect(entry.header, what).toBe(old ? `~ rule "${key}" (new version from now)` : `+ rule "${key}"`);
        expect(entry, what).toMatchObject({ minus: old ? [shownRule(old)] : [], plus: [shownRule(row)] });
        break;
      }
      case 'add-price': {
        const { provider, model } = change.detail;
        const key = `${provider}/${model}`;
        const created = after.prices.filter((row) => sameModel(row, provider, model) && !before.prices.some((old) => rowText(old) === rowText(row)));
        if (change.effectiveFrom) {
          const at = new Date(change.effectiveFrom);
          const row = created.find((candidate) => candidate.effectiveFrom.getTime() === at.getTime())!;
          const old = before.prices.find((candidate) => sameModel(candidate, provider, model) && candidate.effectiveFrom.getTime() === at.getTime());
          expect(entry.header, what).toBe(old ? `~ price ${key} scheduled from ${at.toISOString()} (replaces the version scheduled then)` : `+ price ${key} scheduled from ${at.toISOString()}`);
          expect(entry, what).toMatchObject({ minus: old ? [shownPrice(old)] : [], plus: [shownPrice(row)] });
        } else {
          const row = created.find((candidate) => candidate.effectiveFrom <= new Date(Date.now() + CONCURRENT_NOW_MS))!;
          const old = priceBefore(before.prices, provider, model, row.effectiveFrom);
          expect(entry.header, what).toMatch(old ? new RegExp(`^~ price ${escape(key)} \\(new version from now`) : new RegExp(`^\\+ price ${escape(key)}( \\(dated .*)?$`));
          const oldRow = old && before.prices.find((candidate) => candidate.id === old.ref)!;
          expect(entry, what).toMatchObject({ minus: oldRow ? [shownPrice(oldRow)] : [], plus: [shownPrice(row)] });
        }
        break;
      }
      case 'cancel-price': {
        const old = before.prices.find((row) => row.id === change.ref)!;
        expect(entry.header, what).toBe(`- price ${change.key} scheduled from ${old.effectiveFrom.toISOString()} (cancelled: the file no longer lists it; it has priced nothing)`);
        expect(entry, what).toMatchObject({ minus: [shownPrice(old)], plus: [] });
        expect(after.prices.some((row) => row.id === old.id), what).toBe(false);
        break;
      }
    }
  }
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

// ---------------------------------------------------------------------------------------------
// (d): the versions in force at past instants.

type Snapshot = { at: Date; inForce: Map<string, string> };

/** For every rule (book, name) and price model: the version in force at instants before now. */
function snapshot(state: Dump, random: () => number): Snapshot {
  const at = new Date();
  const inForce = new Map<string, string>();
  const instantsOf = (times: Date[]) => {
    const instants = times.flatMap((time) => [time.getTime() - 1, time.getTime(), time.getTime() + 1]);
    const earliest = Math.min(...instants);
    for (let n = 0; n < 3; n++) instants.push(earliest + Math.floor(random() * (at.getTime() - earliest)));
    return instants.filter((time) => time < at.getTime()).map((time) => new Date(time));
  };
  const books = new Map<string, PriceRule[]>();
  for (const rule of state.rules) books.set(`${rule.planId}/${rule.name}`, [...(books.get(`${rule.planId}/${rule.name}`) ?? []), rule]);
  for (const [book, rows] of books) {
    for (const instant of instantsOf(rows.flatMap((row) => [row.effectiveFrom, ...(row.archivedAt ? [row.archivedAt] : [])]))) {
      const [row] = rulesInForce(rows, instant);
      inForce.set(`rule ${book} @${instant.toISOString()}`, row ? versionText(row) : 'none');
    }
  }
  const prices = state.prices.map(toPrice);
  for (const model of new Set(prices.map((row) => `${row.provider}\u0000${row.model}`))) {
    const [provider, name] = model.split('\u0000') as [string, string];
    for (const instant of instantsOf(prices.filter((row) => sameModel(row, provider, name)).map((row) => row.effectiveFrom))) {
      const row = priceInForce(prices, provider, name, instant);
      inForce.set(`price ${provider}/${name} @${instant.toISOString()}`, row ? rowText(row) : 'none');
    }
  }
  return { at, inForce };
}

/** A rule version as it prices: archiving it later (from a later instant) does not change what it did. */
const versionText = ({ archivedAt: _a, ...row }: PriceRule) => rowText(row);

function expectHistoryKept(snapshots: readonly Snapshot[], state: Dump, label: string) {
  const prices = state.prices.map(toPrice);
  for (const shot of snapshots) {
    for (const [key, was] of shot.inForce) {
      const [, kind, target, iso] = /^(rule|price) (.*) @(.*)$/.exec(key)!;
      const instant = new Date(iso!);
      let now: string;
      if (kind === 'rule') {
        const rows = state.rules.filter((rule) => `${rule.planId}/${rule.name}` === target);
        const [row] = rulesInForce(rows, instant);
        now = row ? versionText(row) : 'none';
      } else {
        const [provider, model] = target!.split('/') as [string, string];
        const row = priceInForce(prices, provider, model, instant);
        now = row ? rowText(row) : 'none';
      }
      expect(now, `${label}: what was in force at ${iso} (seen at ${shot.at.toISOString()}) for ${kind} ${target} changed`).toBe(was);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generators: a small vocabulary with a few values each, so files change some things and keep others.

const rate = fc.constantFrom('0.5', '0.75', '1', '2.5', '4.5', '4.50');
const percent = fc.constantFrom('10', '15', '25', '25.0', '30');
const unitPrice = fc.constantFrom('0.05', '0.050', '0.1', '1');
const SCHEDULED = ['2031-01-01', '2031-06-01', '2032-01-01'];
const opt = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined, freq: 3 });

const markupRule = (percentValue: string) => ({ name: 'markup', type: 'MARKUP' as const, config: { percent: percentValue } });
const imagesRule = (price: string) => ({ name: 'images', type: 'FLAT' as const, meterKey: 'images', config: { unitPrice: price } });

const documents: fc.Arbitrary<PricingConfig> = fc
  .record({
    images: opt(fc.record({ name: fc.constantFrom('Images', 'Pictures'), aggregation: fc.constantFrom(undefined, 'SUM' as const, 'MAX' as const) })),
    output: opt(fc.constantFrom('Output tokens', 'Tokens out')),
    gpt: opt(fc.record({ input: rate, output: rate, past: fc.option(rate, { nil: undefined }), scheduled: fc.uniqueArray(fc.tuple(fc.constantFrom(...SCHEDULED), rate), { selector: ([date]) => date, maxLength: 2 }) })),
    haiku: opt(rate),
    markup: opt(percent),
    openaiMarkup: fc.option(percent, { nil: undefined }),
    images_rule: opt(unitPrice),
    output_rule: fc.option(fc.tuple(rate, rate), { nil: undefined }),
    pro: opt(fc.record({ name: fc.constantFrom('Pro', 'Pro plan'), description: fc.option(fc.constantFrom('cheaper', 'for teams'), { nil: undefined }), markup: opt(percent), images: fc.option(unitPrice, { nil: undefined }) })),
    team: fc.option(fc.constantFrom('Team', 'Teams'), { nil: undefined }),
  })
  .map(
    ({ images, output, gpt, haiku, markup, openaiMarkup, images_rule, output_rule, pro, team }): PricingConfig => ({
      meters: [
        ...(images ? [{ key: 'images', name: images.name, unit: 'image', source: 'IMAGES' as const, ...(images.aggregation ? { aggregation: images.aggregation } : {}) }] : []),
        ...(output ? [{ key: 'output_tokens', name: output, unit: 'token', source: 'OUTPUT_TOKENS' as const }] : []),
      ],
      providerPrices: [
        ...(gpt
          ? [
              { provider: 'openai', model: 'gpt-5.4-mini', perMillionTokens: { input: gpt.input, output: gpt.output } },
              ...(gpt.past ? [{ provider: 'openai', model: 'gpt-5.4-mini', effectiveFrom: '2020-01-01', perMillionTokens: { input: gpt.past, output: gpt.past } }] : []),
              ...gpt.scheduled.map(([date, value]) => ({ provider: 'openai', model: 'gpt-5.4-mini', effectiveFrom: date, perMillionTokens: { input: gpt.input, output: value } })),
            ]
          : []),
        ...(haiku ? [{ provider: 'anthropic', model: 'claude-haiku-4-5', perMillionTokens: { input: haiku, output: '5' } }] : []),
      ],
      priceRules: [
        ...(markup ? [markupRule(markup)] : []),
        ...(openaiMarkup ? [{ name: 'openai markup', type: 'MARKUP' as const, provider: 'openai', config: { percent: openaiMarkup } }] : []),
        ...(images_rule ? [imagesRule(images_rule)] : []),
        ...(output_rule
          ? [{ name: 'output', type: 'GRADUATED' as const, meterKey: 'output_tokens', config: { tiers: [{ upTo: '1000000', unitPrice: output_rule[0] }, { upTo: null, unitPrice: output_rule[1] }] } }]
          : []),
      ],
      plans: [
        ...(pro
          ? [{ key: 'pro', name: pro.name, ...(pro.description ? { description: pro.description } : {}), priceRules: [...(pro.markup ? [markupRule(pro.markup)] : []), ...(pro.images ? [imagesRule(pro.images)] : [])] }]
          : []),
        ...(team ? [{ key: 'team', name: team }] : []),
      ],
    }),
  );

interface Op {
  label: string;
  query: string;
  variables: Record<string, unknown>;
}

const PUT_RULE = 'mutation($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }';
const SET_PRICE = 'mutation($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref } }';
const planKey = fc.constantFrom<string | null>(null, 'pro');
const model = fc.constantFrom('gpt-5.4-mini', 'claude-haiku-4-5');
const providerOf = (name: string) => (name.startsWith('gpt') ? 'openai' : 'anthropic');

/** Changes made through GraphQL, as a merchant's dashboard or script would. Some are refused (typed); that is part of the state too. */
const graphqlOps: fc.Arbitrary<Op> = fc.oneof(
  fc.tuple(planKey, percent).map(([key, value]) => ({ label: `putPriceRule ${key ?? ''}/markup ${value}`, query: PUT_RULE, variables: { input: { ...markupRule(value), planKey: key } } })),
  fc.tuple(planKey, unitPrice).map(([key, value]) => ({ label: `putPriceRule ${key ?? ''}/images ${value}`, query: PUT_RULE, variables: { input: { ...imagesRule(value), planKey: key } } })),
  fc.constant({ label: 'putPriceRule margin (ties with markup)', query: PUT_RULE, variables: { input: { name: 'margin', type: 'MARKUP', config: { percent: '5' } } } }),
  fc.tuple(fc.constantFrom('markup', 'images', 'output', 'openai markup', 'margin'), planKey).map(([name, key]) => ({
    label: `archivePriceRule ${key ?? ''}/${name}`,
    query: 'mutation($name: String!, $planKey: String) { archivePriceRule(name: $name, planKey: $planKey) { id } }',
    variables: { name, planKey: key },
  })),
  fc.tuple(fc.constantFrom('archiveMeter', 'unarchiveMeter'), fc.constantFrom('images', 'output_tokens')).map(([mutation, key]) => ({
    label: `${mutation} ${key}`,
    query: `mutation($key: String!) { ${mutation}(key: $key) { id } }`,
    variables: { key },
  })),
  fc.tuple(model, rate).map(([name, value]) => ({
    label: `setProviderPrice ${name} ${value} from now`,
    query: SET_PRICE,
    variables: { input: { provider: providerOf(name), model: name, rates: { perMillionTokens: { input: value, output: value } } } },
  })),
  fc.tuple(fc.constantFrom(...SCHEDULED, '2031-03-01'), rate).map(([date, value]) => ({
    label: `setProviderPrice gpt-5.4-mini ${value} from ${date}`,
    query: SET_PRICE,
    variables: { input: { provider: 'openai', model: 'gpt-5.4-mini', effectiveFrom: `${date}T00:00:00.000Z`, rates: { perMillionTokens: { input: value, output: value } } } },
  })),
  fc.constantFrom('pro', 'team').map((key) => ({ label: `archivePlan ${key}`, query: 'mutation($key: String!) { archivePlan(key: $key) { id } }', variables: { key } })),
  fc.constantFrom('Pro', 'Professional').map((name) => ({ label: `putPlan pro ${name}`, query: 'mutation($input: PutPlanInput!) { putPlan(input: $input) { id } }', variables: { input: { key: 'pro', name } } })),
);

type Step = { kind: 'apply'; doc: PricingConfig } | { kind: 'graphql'; op: Op } | { kind: 'race'; doc: PricingConfig; between: { kind: 'apply'; doc: PricingConfig } | { kind: 'graphql'; op: Op } };

const steps: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: documents.map((doc): Step => ({ kind: 'apply', doc })) },
  { weight: 2, arbitrary: graphqlOps.map((op): Step => ({ kind: 'graphql', op })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(documents, fc.oneof(documents.map((doc) => ({ kind: 'apply' as const, doc })), graphqlOps.map((op) => ({ kind: 'graphql' as const, op }))))
      .map(([doc, between]): Step => ({ kind: 'race', doc, between })),
  },
);

// ---------------------------------------------------------------------------------------------

const stats = new Map<string, number>();
const count = (what: string) => stats.set(what, (stats.get(what) ?? 0) + 1);

/** A refusal must be typed; the plan's refusals name a field. */
function expectTyped(error: unknown, label: string): asserts error is AppError {
  if (!(error instanceof AppError)) throw new Error(`${label}: untyped error: ${String((error as Error)?.stack ?? error)}`, { cause: error });
  expect(['VALIDATION', 'CONFLICT', 'NOT_FOUND'], `${label}: ${error.message}`).toContain(error.code);
}

async function plan(merchantId: string, doc: PricingConfig, label: string): Promise<Change[] | null> {
  try {
    return await planPricingConfig(server.services, merchantId, doc);
  } catch (error) {
    expectTyped(error, label);
    count(`refused while planning (${error.code})`);
    return null;
  }
}

/** Plans `doc`, checks the dry run writes nothing, applies it and checks the writes and the printed diff against the database. */
async function applyChecked(merchantId: string, doc: PricingConfig, label: string): Promise<void> {
  const before = await dump(merchantId);
  const changes = await plan(merchantId, doc, label);
  // A dry run is the plan and its printed diff alone.
  expect(await dump(merchantId), `${label}: planning (a dry run) wrote`).toEqual(before);
  if (!changes) return;
  const text = describeChanges(changes);
  const window = { start: new Date(), end: new Date() };
  await applyPricingChanges(server.services, merchantId, changes);
  window.end = new Date();
  const after = await dump(merchantId);
  for (const change of changes) count(change.kind);
  expectWritesMatch(before, after, changes, window, label);
  expectDiffTells(text, changes, before, after, `${label}\n${text}\n`);
}

async function graphql(secret: string, op: Op): Promise<void> {
  const { errors, status } = await server.graphql(op.query, op.variables, secret);
  expect(status, `${op.label}: ${JSON.stringify(errors)}`).toBeLessThan(500);
  for (const error of errors ?? []) expect(['BAD_USER_INPUT', 'VALIDATION', 'CONFLICT', 'NOT_FOUND'], `${op.label}: ${error.message}`).toContain(error.extensions.code);
  count(`graphql ${errors ? 'refused' : 'done'}`);
}

async function runSteps(list: readonly Step[], random: () => number): Promise<void> {
  const merchant = await server.createMerchant();
  const snapshots: Snapshot[] = [];
  for (const [index, step] of list.entries()) {
    const label = `step ${index} (${step.kind})`;
    if (step.kind === 'apply') await applyChecked(merchant.id, step.doc, label);
    else if (step.kind === 'graphql') await graphql(merchant.secret, step.op);
    else {
      // (c) Planned, then the database changes, then the plan is applied.
      const changes = await plan(merchant.id, step.doc, label);
      if (step.between.kind === 'apply') await applyChecked(merchant.id, step.between.doc, `${label}: the apply in between`);
      else await graphql(merchant.secret, step.between.op);
      if (changes) {
        const before = await dump(merchant.id);
        const window = { start: new Date(), end: new Date() };
        const outcome = await applyPricingChanges(server.services, merchant.id, changes).then(
          () => null,
          (error: unknown) => error,
        );
        window.end = new Date();
        const after = await dump(merchant.id);
        const what = `${label}: planned ${JSON.stringify(changes.map((change) => `${change.kind} ${change.key}`))}, then ${step.between.kind === 'apply' ? 'another apply' : step.between.op.label}`;
        if (outcome) {
          expectTyped(outcome, what);
          count(`race refused (${outcome.code})`);
          expect(after, `${what}: refused (${outcome.message}) but wrote`).toEqual(before);
        } else {
          count('race applied');
          expectWritesMatch(before, after, changes, window, what, true);
          // What the diff showed as replaced is what was replaced: nothing written since the plan was overridden unseen.
          expectDiffTells(describeChanges(changes), changes, before, after, `${what}\n${describeChanges(changes)}\n`, true);
        }
      }
    }
    const state = await dump(merchant.id);
    expectHistoryKept(snapshots, state, label);
    snapshots.push(snapshot(state, random));
  }
}

describe('pricing as code: the diff is what applying does (fuzz)', () => {
  it('from random merchant states, the planned changes, the printed diff and the rows written agree; races apply the plan or nothing; history is kept', { timeout: 120_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(steps, { minLength: 2, maxLength: 7 }), fc.infiniteStream(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })), async (list, stream) => {
        const random = stream[Symbol.iterator]();
        await runSteps(list, () => random.next().value as number);
      }),
      fuzzOptions(20),
    );
    if (process.env.FUZZ_STATS) console.log([...stats].sort().map(([what, n]) => `${what}: ${n}`).join('\n'));
    // The generators reach every kind of change, and races that apply.
    for (const kind of ['create-meter', 'update-meter', 'add-price', 'cancel-price', 'create-plan', 'update-plan', 'add-rule', 'race applied']) expect(stats.get(kind) ?? 0, kind).toBeGreaterThan(0);
  });
});

describe('pricing as code diffs: what the fuzzing found (minimal reproductions)', () => {
  it('a new meter is shown with its values, as a changed one is', async () => {
    // describeChanges printed "+ meter images" alone: not the source (which can never change once created), unit or aggregation.
    const merchant = await server.createMerchant();
    const changes = await planPricingConfig(server.services, merchant.id, { meters: [{ key: 'images', name: 'Images', unit: 'image', source: 'IMAGES', aggregation: 'MAX' }] });
    expect(describeChanges(changes)).toBe('+ meter images\n    + {"aggregation":"MAX","name":"Images","source":"IMAGES","unit":"image"}');
  });

  it('a price set through GraphQL between plan and apply refuses the apply, and nothing is written', async () => {
    // Only a version put "from now" within the last second (CONCURRENT_NOW_MS) was checked: one
    // set a moment earlier, while the CLI asked to confirm, was replaced under a diff showing the older one.
    const merchant = await server.createMerchant();
    const file = (output: string, scheduled?: string): PricingConfig => ({
      providerPrices: [
        { provider: 'openai', model: 'gpt-5.4-mini', perMillionTokens: { input: '1', output } },
        ...(scheduled ? [{ provider: 'openai', model: 'gpt-5.4-mini', effectiveFrom: '2031-01-01', perMillionTokens: { input: '1', output: scheduled } }] : []),
      ],
    });
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file('2', '3')));
    const set = (rates: string, effectiveFrom?: string) =>
      server.graphql(SET_PRICE, { input: { provider: 'openai', model: 'gpt-5.4-mini', ...(effectiveFrom ? { effectiveFrom } : {}), rates: { perMillionTokens: { input: '1', output: rates } } } }, merchant.secret);
    for (const [label, later, between] of [
      ['in force from now', file('4', '3'), () => set('9')],
      ['scheduled for the date the file replaces', file('9', '4'), () => set('7', '2031-01-01T00:00:00.000Z')],
      ['scheduled for the date the file cancels', file('9'), () => set('6', '2031-01-01T00:00:00.000Z')],
    ] as const) {
      const changes = await planPricingConfig(server.services, merchant.id, later);
      expect((await between()).errors, label).toBeUndefined();
      await new Promise((resolve) => setTimeout(resolve, CONCURRENT_NOW_MS + 10));
      const before = await dump(merchant.id);
      await expect(applyPricingChanges(server.services, merchant.id, changes), label).rejects.toMatchObject({ code: 'CONFLICT', details: { models: ['openai/gpt-5.4-mini'] } });
      expect(await dump(merchant.id), label).toEqual(before);
    }
  });
});
