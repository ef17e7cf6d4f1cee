import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { printedSchema } from '../src/graphql/print.ts';

/** `npm run schema`: writes ../schema.graphql, the SDL printed from the Pothos schema. */
const target = fileURLToPath(new URL('../../schema.graphql', import.meta.url));
writeFileSync(target, printedSchema());
console.log(`wrote ${target}`);
