import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';

const KEY = { TOLLGATE_MASTER_KEY: '1'.repeat(64) };

describe('DATABASE_URL', () => {
  it.each([
    ['postgresql//127.0.0.1:5432/tollgate', /is not a URL/],
    ['not a url', /is not a URL/],
    ['localhost:5432/db', /starts with "localhost:" instead of postgresql:\/\//],
    ['mysql://127.0.0.1:3306/tollgate', /starts with "mysql:"/],
    ['postgresql:///tollgate', /names no host/],
    ['postgresql://user:secret@/tollgate', /names no host/],
    ['postgresql://user:pa#ss@127.0.0.1/tollgate', /percent-encoded/],
  ])('%s stops the server with a message naming DATABASE_URL and its form', (value, problem) => {
    const load = () => loadConfig({ ...KEY, DATABASE_URL: value });
    expect(load).toThrow(/^DATABASE_URL must be a PostgreSQL URL such as postgresql:\/\/user:password@host:5432\/database/);
    expect(load).toThrow(problem);
  });

  it('is never repeated in the message: it may hold a password', () => {
    expect(() => loadConfig({ ...KEY, DATABASE_URL: 'postgresql//admin:hunter2-secret@db:5432/tollgate' })).toThrow(
      expect.objectContaining({ message: expect.not.stringContaining('hunter2') }),
    );
  });

  it.each([
    'postgresql://postgres@127.0.0.1:5432/tollgate',
    'postgres://user:p%23ss@db.internal/tollgate?sslmode=require',
    'postgresql://[::1]:5432/tollgate',
    // "@/" past the host, in the query string: pg connects to the host.
    'postgresql://app:secret@db.example.com:5432/tollgate?application_name=billing@/eu',
    'postgresql:///tollgate?host=/var/run/postgresql',
    'postgresql://user:secret@/tollgate?host=/var/run/postgresql',
    'postgresql://%2Fvar%2Frun%2Fpostgresql/tollgate',
    'socket:/var/run/postgresql?db=tollgate',
  ])('takes %s', (value) => {
    expect(loadConfig({ ...KEY, DATABASE_URL: value }).databaseUrl).toBe(value);
  });

  it('may leave the host to PGHOST, as pg does', () => {
    expect(loadConfig({ ...KEY, PGHOST: '/var/run/postgresql', DATABASE_URL: 'postgresql:///tollgate' }).databaseUrl).toBe('postgresql:///tollgate');
  });

  it('unset or empty means embedded PGlite', () => {
    expect(loadConfig({ ...KEY }).databaseUrl).toBeUndefined();
    expect(loadConfig({ ...KEY, DATABASE_URL: '' }).databaseUrl).toBeUndefined();
  });
});
