import { expect } from 'vitest';
import { AppError } from '../src/shared/errors.ts';

/** The AppError a service call is refused with (the test fails if it succeeds or throws anything else). */
export async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const error = await promise.then(
    () => null,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(AppError);
  return error as AppError;
}
