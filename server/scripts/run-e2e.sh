#!/usr/bin/env bash
# Browser (end-to-end) tests: GraphiQL playground in a real Chromium (test/e2e, vitest.e2e.config.ts).
#
# The run happens inside a fresh network namespace with only loopback up, so neither the page
# nor Chromium's own background connections (updates, safe browsing, …) can leave the machine;
# the tests themselves additionally abort and record any non-loopback request. The server under
# test and its database (in-process PGlite) need nothing outside the process.
#
# Needs Chromium at ${CHROMIUM_PATH:-/usr/bin/chromium} (Debian: apt-get install -y chromium).
# Without it: an error when CI is set, otherwise a loud warning and success (tests NOT run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."   # the server workspace

chromium_path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium_path" ]; then
  if [ -n "${CI:-}" ]; then
    echo "error: Chromium not found at $chromium_path; the browser tests cannot run." >&2
    echo "       Install it (apt-get install -y chromium) or set CHROMIUM_PATH." >&2
    exit 1
  fi
  {
    echo
    echo "######################################################################"
    echo "#  WARNING: browser tests NOT run: install Chromium (apt-get install -y chromium)"
    echo "#  (looked for $chromium_path; set CHROMIUM_PATH to use another binary)"
    echo "######################################################################"
    echo
  } >&2
  exit 0
fi

# A new network namespace needs CAP_SYS_ADMIN (root, or unprivileged user namespaces). Where
# that is refused (some containers), fall back to the host network: the in-test route blocker
# still aborts every external request the page makes, but Chromium's own background traffic
# is then only limited by its --disable-* flags.
if unshare --net true 2>/dev/null; then
  exec unshare --net sh -c 'ip link set lo up && exec npx vitest run -c vitest.e2e.config.ts "$@"' sh "$@"
fi
echo "warning: 'unshare --net' not permitted here; running the browser tests without network isolation" >&2
exec npx vitest run -c vitest.e2e.config.ts "$@"
