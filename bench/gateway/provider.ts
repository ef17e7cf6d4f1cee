/**
 * The fake OpenAI provider of bench/gateway, in a process of its own so that it shares no event
 * loop with the gateway or the load generator. Prints its URL, and stops when told (SIGTERM,
 * SIGINT) or when the bench that started it goes away (its stdin closes).
 */
import { startFakeProvider } from '../../server/test/fake-provider.ts';

const provider = await startFakeProvider({ record: false });
console.log(`fake provider: ${provider.url}`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await provider.close();
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.stdin.on('close', () => void stop());
process.stdin.resume();
