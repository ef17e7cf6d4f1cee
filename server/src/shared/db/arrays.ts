import { isoTimes } from '../times.ts';

/**
 * PostgreSQL array literals built in one pass, for `unnest($1::uuid[], …)` bulk statements.
 * The driver's generic encoding inspects and escapes every element on its own; a batch of
 * a few thousand elements is cheaper joined here. Pass the result as a text parameter with
 * an explicit cast (`$1::bigint[]`).
 */
export type ArrayElement = string | number | bigint | boolean | Date | null | undefined;

/** The array literal of `values`. */
export function pgArray(values: readonly ArrayElement[]): string {
  return pgArrayOf(values, (value) => value);
}

/** Text that an array literal can hold unquoted: no whitespace, braces, quotes, commas or backslashes. */
const PLAIN = /^[^\s{}",\\]+$/;

/**
 * The array literal of `pick` over `items`, without an intermediate array of values: ingest
 * builds some thirty columns per batch of a thousand events, so every per-element string counts.
 * Ids, numbers and times go in as they are (quoted only when they must be), and the literal is
 * joined once, so no string is built per element but for numbers and quoted text.
 */
export function pgArrayOf<T>(items: readonly T[], pick: (item: T) => ArrayElement): string {
  const parts: string[] = new Array<string>(items.length);
  // Rows of a batch often repeat the row before (merchant, currency, kind, wallet) and mostly
  // share their timestamps: a repeat reuses the text, and each distinct time is formatted once.
  let previous: ArrayElement = undefined;
  let previousText = '';
  const iso = isoTimes();
  for (let i = 0; i < items.length; i++) {
    const value = pick(items[i]!);
    if (i > 0 && value === previous) {
      parts[i] = previousText;
      continue;
    }
    if (value === null || value === undefined) parts[i] = 'NULL';
    else if (typeof value === 'string') {
      if (PLAIN.test(value) && !(value.length === 4 && value.toUpperCase() === 'NULL')) parts[i] = value;
      else parts[i] = '"' + (value.indexOf('"') === -1 && value.indexOf('\\') === -1 ? value : value.replace(/["\\]/g, '\\$&')) + '"';
    } else if (typeof value === 'number' || typeof value === 'bigint') parts[i] = String(value);
    else if (typeof value === 'boolean') parts[i] = value ? 't' : 'f';
    else parts[i] = iso(value);
    previous = value;
    previousText = parts[i]!;
  }
  return '{' + parts.join(',') + '}';
}

const sameValue = (a: ArrayElement, b: ArrayElement) =>
  a === b || (a === null && b === undefined) || (a === undefined && b === null) || (a instanceof Date && b instanceof Date && a.getTime() === b.getTime());

/**
 * The columns of one bulk `INSERT … SELECT` over parallel arrays. A column whose rows all hold
 * the same value (a batch's merchant, wallet, currency, kind, time) goes once as a scalar
 * parameter instead of an array: a hot-wallet batch sends half the bytes, and PostgreSQL parses
 * one value where it would parse hundreds. The first column always goes as an array, so the
 * FROM clause has the batch's row count even when every other column is uniform.
 *
 *   const bulk = new BulkColumns(rows, params);
 *   bulk.column('id', 'uuid', (row) => row.id).column('kind', 'text', (row) => row.kind, '"Kind"');
 *   `INSERT INTO t (${bulk.names}) SELECT ${bulk.select} FROM ${bulk.from}`
 */
export class BulkColumns<T> {
  private readonly columnNames: string[] = [];
  private readonly selects: string[] = [];
  private readonly sources: string[] = [];
  private readonly sourceNames: string[] = [];

  /** `params` is the statement's parameter list: each column appends its value and refers to it by position. */
  constructor(
    private readonly rows: readonly T[],
    private readonly params: unknown[],
  ) {
    if (rows.length === 0) throw new Error('a bulk insert needs at least one row');
  }

  /** Adds a column of `type` (a PostgreSQL type name); `cast` converts it on the way in (an enum, jsonb). */
  column(name: string, type: string, pick: (row: T) => ArrayElement, cast?: string): this {
    const first = pick(this.rows[0]!);
    let uniform = this.sources.length > 0;
    for (let i = 1; uniform && i < this.rows.length; i++) uniform = sameValue(pick(this.rows[i]!), first);
    let reference: string;
    if (uniform) {
      this.params.push(first === undefined || first === null ? null : typeof first === 'bigint' ? first.toString() : first);
      reference = `$${this.params.length}::${type}`;
    } else {
      this.params.push(pgArrayOf(this.rows, pick));
      this.sources.push(`unnest($${this.params.length}::${type}[])`);
      this.sourceNames.push(name);
      reference = `u.${name}`;
    }
    this.columnNames.push(name);
    this.selects.push(cast ? `${reference}::${cast}` : reference);
    return this;
  }

  /**
   * Adds a column that is already a set-returning expression over the rows, in their order (e.g.
   * `json_array_elements($n::json)`); `cast` converts each value on the way in.
   */
  source(name: string, expression: string, cast?: string): this {
    if (this.sources.length === 0) throw new Error('the first column of a bulk insert must be an array column');
    this.sources.push(expression);
    this.sourceNames.push(name);
    this.columnNames.push(name);
    this.selects.push(cast ? `u.${name}::${cast}` : `u.${name}`);
    return this;
  }

  /** The column names, for the INSERT's column list. */
  get names(): string {
    return this.columnNames.join(', ');
  }

  /** The SELECT list, in the order of `names`. */
  get select(): string {
    return this.selects.join(', ');
  }

  /** The FROM clause: the array columns zipped row by row, as `u`. */
  get from(): string {
    return `ROWS FROM (${this.sources.join(', ')}) AS u(${this.sourceNames.join(', ')})`;
  }
}
