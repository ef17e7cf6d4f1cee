import { expect } from 'vitest';
import { decimalText, decimalUnits } from './seeded-random.ts';

/**
 * The wallet side of the ledger as the README describes it, for model tests to check the API
 * against: grants spent in the merchant's consumption order, debt, grant expiry, and credit kept
 * for pending holds past its grant's expiry. Exact, in bigint nanos.
 */

export type GrantKind = 'PAID' | 'PROMOTIONAL' | 'PLAN_INCLUDED';
export type ConsumptionKey = 'EXPIRY' | 'KIND' | 'PRIORITY' | 'CREATED';
export const DEFAULT_ORDER: readonly ConsumptionKey[] = ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'];
/** Promotional before plan credit before paid (CreditConsumptionKey's description). */
const KIND_RANK: Record<GrantKind, number> = { PROMOTIONAL: 0, PLAN_INCLUDED: 1, PAID: 2 };

export interface OracleGrant {
  seq: number;
  kind: GrantKind;
  amount: bigint;
  remaining: bigint;
  priority: number;
  expiresAt: number | null;
  createdAt: number;
  /** Credit kept past its expiry for this pending hold (README: "holdId set on the grant"). */
  holdId: string | null;
  expired: boolean;
}

export interface OracleHold {
  id: string;
  wallet: string;
  amount: bigint;
  status: 'PENDING' | 'CAPTURED' | 'RELEASED' | 'EXPIRED';
  captured: bigint;
  expiresAt: number;
  seq: number;
}

export interface OracleWallet {
  balance: bigint;
  grants: OracleGrant[];
}

export interface OracleModel<W extends OracleWallet, H extends OracleHold> {
  wallets: Map<string, W>;
  holds: H[];
  order: ConsumptionKey[];
  seq: number;
}

const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);
const toNanos = (text: string) => decimalUnits(text, 9);
const fmt = (nanos: bigint) => decimalText(nanos, 9);

export const live = (hold: OracleHold, at: number) => hold.status === 'PENDING' && hold.expiresAt > at;
/** What the wallet's pending holds reserve at `at`. */
export const heldOf = (model: OracleModel<OracleWallet, OracleHold>, key: string, at: number) =>
  model.holds.filter((h) => h.wallet === key && live(h, at)).reduce((s, h) => s + h.amount - h.captured, 0n);
export const active = (wallet: OracleWallet) => wallet.grants.filter((g) => !g.expired);
export const keptFor = (wallet: OracleWallet, holdId: string) => active(wallet).filter((g) => g.holdId === holdId).reduce((s, g) => s + g.remaining, 0n);
export const keptTotal = (wallet: OracleWallet) => active(wallet).filter((g) => g.holdId !== null).reduce((s, g) => s + g.remaining, 0n);

export function sorted(grants: OracleGrant[], order: readonly ConsumptionKey[]): OracleGrant[] {
  const compare = (a: OracleGrant, b: OracleGrant, key: ConsumptionKey): number => {
    switch (key) {
      case 'EXPIRY': return Math.sign((a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity)) || 0;
      case 'KIND': return KIND_RANK[a.kind] - KIND_RANK[b.kind];
      case 'PRIORITY': return a.priority - b.priority;
      case 'CREATED': return a.createdAt - b.createdAt;
    }
  };
  // Grants alike in every key are spent in the order they were created.
  return [...grants].sort((a, b) => order.reduce((r, key) => r || compare(a, b, key), 0) || a.seq - b.seq);
}

/** The wallet's own credit (none kept for a hold), in the order it is spent. */
export const own = (model: OracleModel<OracleWallet, OracleHold>, wallet: OracleWallet) => sorted(active(wallet).filter((g) => g.holdId === null), model.order);

/** Draws `nanos` from `grants` in order; what they lack is owed (the balance goes below zero). */
export function draw(wallet: OracleWallet, grants: OracleGrant[], nanos: bigint): void {
  let left = nanos;
  for (const grant of grants) {
    if (left === 0n) break;
    const take = min(grant.remaining, left);
    grant.remaining -= take;
    left -= take;
  }
  wallet.balance -= nanos;
}

/** New credit repays what the wallet owes first (README: "new credit repays the debt first"). */
export function credit(
  model: OracleModel<OracleWallet, OracleHold>,
  wallet: OracleWallet,
  grant: { kind: GrantKind; amount: bigint; priority: number; expiresAt: number | null },
  at: number,
): void {
  const owes = wallet.balance - keptTotal(wallet);
  const repaid = min(grant.amount, owes < 0n ? -owes : 0n);
  wallet.grants.push({ ...grant, seq: model.seq++, remaining: grant.amount - repaid, createdAt: at, holdId: null, expired: false });
  wallet.balance += grant.amount;
}

export function expire(wallet: OracleWallet, grant: OracleGrant): void {
  wallet.balance -= grant.remaining;
  grant.remaining = 0n;
  grant.expired = true;
}

/**
 * A hold captured for `amount`: its own kept credit first, then the wallet's own credit (README:
 * "Only that hold's capture spends such credit"); what was kept for it and not spent expires.
 */
export function capture(model: OracleModel<OracleWallet, OracleHold>, wallet: OracleWallet, hold: OracleHold, amount: bigint): void {
  const keptGrants = sorted(active(wallet).filter((g) => g.holdId === hold.id), model.order);
  draw(wallet, [...keptGrants, ...own(model, wallet)], amount);
  hold.status = 'CAPTURED';
  hold.captured = amount;
  for (const grant of keptGrants) expire(wallet, grant);
}

/**
 * What any change to a wallet (and any read) does first, at `at`: credit kept for holds that
 * ended expires; before due grants expire, what pending holds lack beyond lasting credit is kept
 * for them (oldest hold first; `onKept` is told of each part kept); then due grants expire, and
 * holds past their time are expired.
 */
export function settle(model: OracleModel<OracleWallet, OracleHold>, key: string, at: number, onKept: () => void = () => undefined): void {
  const wallet = model.wallets.get(key);
  if (wallet) {
    const holdLive = (id: string) => live(model.holds.find((h) => h.id === id)!, at);
    const ended = active(wallet).filter((g) => g.holdId !== null && !holdLive(g.holdId));
    const due = sorted(active(wallet).filter((g) => g.holdId === null && g.expiresAt !== null && g.expiresAt <= at), model.order);
    if (heldOf(model, key, at) > 0n && due.some((g) => g.remaining > 0n)) {
      const holds = model.holds.filter((h) => h.wallet === key && live(h, at)).sort((a, b) => a.seq - b.seq);
      const needs = holds.map((h) => ({ id: h.id, lacking: h.amount - h.captured - keptFor(wallet, h.id) })).filter((n) => n.lacking > 0n);
      const lasting = active(wallet).filter((g) => g.holdId === null && !due.includes(g)).reduce((s, g) => s + g.remaining, 0n);
      const dueTotal = due.reduce((s, g) => s + g.remaining, 0n);
      let toKeep = min(max(needs.reduce((s, n) => s + n.lacking, 0n) - lasting, 0n), dueTotal);
      let covered = lasting;
      for (const need of needs) {
        const cover = min(need.lacking, covered);
        need.lacking -= cover;
        covered -= cover;
      }
      for (const source of due) {
        if (toKeep === 0n) break;
        let take = min(source.remaining, toKeep);
        toKeep -= take;
        source.remaining -= take;
        for (const need of needs) {
          if (take === 0n) break;
          const part = min(need.lacking, take);
          if (part === 0n) continue;
          need.lacking -= part;
          take -= part;
          onKept();
          wallet.grants.push({ seq: model.seq++, kind: source.kind, amount: part, remaining: part, priority: source.priority, expiresAt: source.expiresAt, createdAt: at, holdId: need.id, expired: false });
        }
      }
    }
    for (const grant of [...ended, ...due]) expire(wallet, grant);
  }
  for (const hold of model.holds) if (hold.wallet === key && hold.status === 'PENDING' && hold.expiresAt <= at) hold.status = 'EXPIRED';
}

interface Money {
  amount: string;
  currency: string;
}

/** A wallet as WALLETS_QUERY reads it. */
export interface WalletView {
  currency: string;
  balance: Money;
  available: Money;
  held: Money;
  overdraftLimit: Money;
  grants: { nodes: { kind: string; amount: Money; remaining: Money; priority: number; expiresAt: string | null; holdId: string | null }[] };
  holds: { nodes: { id: string; status: string; amount: Money; capturedAmount: Money; expiresAt: string }[] };
}

/** A wallet as the API reads it, with its grants and holds, for expectWalletView. */
const WALLET_FIELDS = `id currency balance { amount currency } available { amount currency } held { amount currency } overdraftLimit { amount currency }
  grants(first: 100) { totalCount nodes { kind amount { amount currency } remaining { amount currency } priority expiresAt holdId } }
  holds(first: 100) { totalCount nodes { id status amount { amount currency } capturedAmount { amount currency } expiresAt } }`;
export const WALLETS_QUERY = `query ($id: ID!) { wallets(customerId: $id) { ${WALLET_FIELDS} } }`;

/** Expects the API's view of a wallet (WALLETS_QUERY) to be the oracle's at `at`: its figures, grants, credit kept for holds, and holds. */
export function expectWalletView(
  model: OracleModel<OracleWallet, OracleHold>,
  wallet: OracleWallet & { currency: string; limit: bigint },
  key: string,
  view: WalletView,
  label: string,
  at: number,
): void {
  // Every figure is in the wallet's own currency.
  const currencies = new Set<string>([view.balance.currency, view.available.currency, view.held.currency, view.overdraftLimit.currency]);
  for (const g of view.grants.nodes) currencies.add(g.amount.currency).add(g.remaining.currency);
  for (const h of view.holds.nodes) currencies.add(h.amount.currency).add(h.capturedAmount.currency);
  expect([...currencies], `${label}: currencies in ${JSON.stringify(view)}`).toEqual([wallet.currency]);
  const held = heldOf(model, key, at);
  expect({ balance: fmt(toNanos(view.balance.amount)), held: fmt(toNanos(view.held.amount)), available: fmt(toNanos(view.available.amount)), limit: fmt(toNanos(view.overdraftLimit.amount)) }, label)
    .toEqual({ balance: fmt(wallet.balance), held: fmt(held), available: fmt(wallet.balance - held), limit: fmt(wallet.limit) });
  // Live grants, oldest first; credit kept for holds compared per hold.
  const expectedOwn = active(wallet).filter((g) => g.holdId === null && g.remaining > 0n).sort((a, b) => a.seq - b.seq)
    .map((g) => `${g.kind} ${fmt(g.amount)} left ${fmt(g.remaining)} p${g.priority} ${g.expiresAt === null ? 'never' : new Date(g.expiresAt).toISOString()}`);
  const actualOwn = view.grants.nodes.filter((g) => !g.holdId)
    .map((g) => `${g.kind} ${fmt(toNanos(g.amount.amount))} left ${fmt(toNanos(g.remaining.amount))} p${g.priority} ${g.expiresAt ?? 'never'}`);
  expect(actualOwn, `${label}: grants`).toEqual(expectedOwn);
  const keptExpected = new Map<string, string>();
  for (const g of active(wallet)) if (g.holdId && g.remaining > 0n) keptExpected.set(g.holdId, fmt(toNanos(keptExpected.get(g.holdId) ?? '0') + g.remaining));
  const keptActual = new Map<string, string>();
  for (const g of view.grants.nodes) if (g.holdId) keptActual.set(g.holdId, fmt(toNanos(keptActual.get(g.holdId) ?? '0') + toNanos(g.remaining.amount)));
  expect(Object.fromEntries(keptActual), `${label}: credit kept for holds`).toEqual(Object.fromEntries(keptExpected));
  // Holds: every one of this wallet, in its state as of now.
  const expectedHolds = model.holds.filter((h) => h.wallet === key)
    .map((h) => `${h.id} ${live(h, at) || h.status !== 'PENDING' ? h.status : 'EXPIRED'} ${fmt(h.amount)} captured ${fmt(h.captured)} until ${new Date(h.expiresAt).toISOString()}`).sort();
  const actualHolds = view.holds.nodes.map((h) => `${h.id} ${h.status} ${fmt(toNanos(h.amount.amount))} captured ${fmt(toNanos(h.capturedAmount.amount))} until ${h.expiresAt}`).sort();
  expect(actualHolds, `${label}: holds`).toEqual(expectedHolds);
}
