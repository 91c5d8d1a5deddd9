#!/usr/bin/env bash
# Compares `tether map` with jq and jaq on the benchmarks' contact mapping (a): the same JSON
# Lines input, the same output fields, records per second side by side, one core each.
#
#   benches/compare.sh            # 200000 records
#   N=50000 benches/compare.sh    # fewer
#
# jq and jaq are optional: a missing tool is skipped with a message
# (jaq: `cargo install jaq --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-200000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building tether (release)..." >&2
cargo build --release --quiet
tether=target/release/tether

# One JSON Lines file of contacts shaped like those of benches/mapping.rs.
awk -v n="$N" 'BEGIN {
  srand(7);
  split("Ann Bjorn Carla Dmitri Eve Fatima Gustav Hana", first, " ");
  split("Lee Olsen Rossi Ivanov Smith Haddad Berg Sato", last, " ");
  split("NOR SWE DNK DEU FRA USA GBR JPN ITA ESP", country, " ");
  split("A I B", status, " ");
  for (i = 1; i <= n; i++) {
    f = first[int(rand() * 8) + 1]; l = last[int(rand() * 8) + 1];
    printf "{\"id\":%d,\"first_name\":\"%s\",\"last_name\":\"%s\",", i, f, l;
    printf "\"email\":\" %s.%s%d@example.com\",", tolower(f), tolower(l), i;
    printf "\"phone\":\"+47 %d %d %d\",", 20 + int(rand() * 79), 10 + int(rand() * 89), 100 + int(rand() * 899);
    printf "\"country\":\"%s\",\"status\":\"%s\",", country[int(rand() * 10) + 1], status[int(rand() * 3) + 1];
    printf "\"birthday\":\"%d-%02d-%02d\",", 1950 + int(rand() * 55), 1 + int(rand() * 12), 1 + int(rand() * 28);
    printf "\"newsletter\":%s,", (rand() < 0.5 ? "true" : "false");
    printf "\"notes\":\"  customer since %d  \",", 2000 + int(rand() * 24);
    printf "\"seen_at\":\"2024-%02d-%02dT%02d:%02d:00Z\",", 1 + int(rand() * 12), 1 + int(rand() * 28), int(rand() * 24), int(rand() * 60);
    printf "\"address\":{\"city\":\"Oslo\"},\"updated\":\"2024-05-01T00:00:00Z\"}\n";
  }
}' > "$work/contacts.jsonl"

# The same mapping as `people-to-contacts` in benches/fixtures/crm-to-erp.yaml, for jq and jaq.
cat > "$work/contact.jq" <<'EOF'
def strip: sub("^\\s+"; "") | sub("\\s+$"; "");
def alpha2: {"NOR": "NO", "SWE": "SE", "DNK": "DK", "DEU": "DE", "FRA": "FR", "USA": "US",
             "GBR": "GB", "JPN": "JP", "ITA": "IT", "ESP": "ES"}[.];
{
  given_name: .first_name,
  family_name: .last_name,
  display_name: ([.first_name, .last_name] | map(select(. != null and . != "")) | join(" ")),
  email: (.email | strip),
  phone: (.phone | gsub("[^0-9+]"; "")),
  country: (.country | alpha2),
  state: ({"A": "active", "I": "inactive", "B": "blocked"}[.status]),
  birth_date: .birthday,
  opted_in: .newsletter,
  notes: (.notes | strip),
  last_seen: .seen_at,
  address: {city: .address.city}
}
EOF

pin=()
if command -v taskset >/dev/null 2>&1; then
  pin=(taskset -c 0)
fi

# Runs a command on the input and prints the elapsed nanoseconds.
elapsed() {
  local out=$1
  shift
  local start end
  start=$(date +%s%N)
  "${pin[@]}" "$@" < "$work/contacts.jsonl" > "$out"
  end=$(date +%s%N)
  echo $((end - start))
}

declare -A rate
report() {
  local name=$1 ns=$2 out=$3
  local lines
  lines=$(wc -l < "$out")
  if [ "$lines" -ne "$N" ]; then
    echo "$name wrote $lines records instead of $N" >&2
    exit 1
  fi
  rate[$name]=$(awk -v n="$N" -v ns="$ns" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
  printf "%-8s %10.3f s %12s records/s\n" "$name" "$(awk -v ns="$ns" 'BEGIN { print ns / 1e9 }')" "${rate[$name]}"
}

echo "$N contact records, mapping people-to-contacts, one core each"
ns=$(elapsed "$work/tether.jsonl" "$tether" --flows benches/fixtures map people-to-contacts)
report tether "$ns" "$work/tether.jsonl"

for tool in jq jaq; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool       not installed: skipped"
    continue
  fi
  ns=$(elapsed "$work/$tool.jsonl" "$tool" -c -f "$work/contact.jq")
  report "$tool" "$ns" "$work/$tool.jsonl"
  # The outputs must agree field for field (compared with sorted keys).
  if ! cmp -s <(head -n 1000 "$work/tether.jsonl" | jq -S -c .) <(head -n 1000 "$work/$tool.jsonl" | jq -S -c .) 2>/dev/null; then
    echo "  note: $tool's output differs from tether's on the first 1000 records" >&2
  fi
done

for tool in jq jaq; do
  if [ -n "${rate[$tool]:-}" ]; then
    awk -v t="${rate[tether]}" -v o="${rate[$tool]}" -v name="$tool" \
      'BEGIN { printf "tether is %.1fx %s\n", t / o, name }'
  fi
done
