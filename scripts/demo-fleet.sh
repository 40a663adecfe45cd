#!/usr/bin/env bash
# Fleet demo: a real release on simulated trucks.
#  1. train the APS classifier with the full nested evaluation, build the image, export the release
#  2. create the simulated trucks of inventories/simulated (Debian 12 + systemd, no Docker yet)
#  3. ansible-playbook site.yml -i inventories/simulated (Docker engine + inference service)
#  4. send each truck real rows of the unlabeled APS test sample, print the predictions
#  5. print each truck's serving version (linkedge.edge.edge_facts)
# The trucks are removed at the end unless KEEP=1.
# Usage: bash scripts/demo-fleet.sh   (from the repository root, after `make setup`)
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
export PATH="$PWD/$BIN:$PATH"
DATA="${LINKEDGE_DATA_DIR:-../shared/aps}"
OUT="${OUT:-build/demo-fleet}"
IMAGE="${IMAGE:-linkedge/aps-classifier:fleet-demo}"
ROWS="${ROWS:-500}"        # rows sent to each truck
SHOW="${SHOW:-3}"          # predictions printed per truck (plus the ones flagged pos)
INVENTORY=inventories/simulated
CSV="$DATA/aps_failure_test_set.unlabeled-sample.csv"
export LINKEDGE_RELEASE_DIR="$PWD/$OUT/release"
export ANSIBLE_CONFIG="$PWD/ansible.cfg"
cli() { python -m inference_image "$@"; }
started=$(date +%s)
step() { printf '\n== [%3d s] %s\n' "$(( $(date +%s) - started ))" "$*"; }

cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: trucks left running; remove them with:"
    echo "  ansible-playbook playbooks/simulated_fleet.yml -i $INVENTORY -e simulated_fleet_state=absent"
  else
    step "removing the simulated trucks (KEEP=1 keeps them)"
    ansible-playbook playbooks/simulated_fleet.yml -i "$INVENTORY" -e simulated_fleet_state=absent >/dev/null
  fi
}

[ -d "$OUT" ] && chmod -R u+w "$OUT" && rm -rf "$OUT"
mkdir -p "$OUT"

step "1/5 train on $DATA (nested CV for the official cost), build $IMAGE, export the release"
cli train --data "$DATA" --out "$OUT/bundle" >"$OUT/train.json"
python - "$OUT/bundle/model_card.json" <<'EOF'
import json, sys
card = json.load(open(sys.argv[1]))
oof = (card.get("metrics") or {}).get("out_of_fold") or {}
print(f"model {card['version']}: threshold {card.get('threshold')}, "
      f"out-of-fold cost ratio {oof.get('cost_ratio', 'n/a')}")
EOF
cli build --bundle "$OUT/bundle" --tag "$IMAGE" --no-pull >"$OUT/build.json"
cli export --image "$IMAGE" --out "$LINKEDGE_RELEASE_DIR" >"$OUT/export.json"
# Trucks load only releases signed by a key they trust: the development key (made once).
[ -f build/keys/release-signing.key ] || cli keygen --out build/keys >/dev/null
cli sign --release "$LINKEDGE_RELEASE_DIR" --signing-key build/keys/release-signing.key >/dev/null
export LINKEDGE_RELEASE_PUBLIC_KEY="$PWD/build/keys/release-signing.pub"
echo "release: $LINKEDGE_RELEASE_DIR ($(du -h "$LINKEDGE_RELEASE_DIR"/*.tar | cut -f1) archive)"

step "2/5 create the simulated trucks ($INVENTORY)"
trap cleanup EXIT
ansible-playbook playbooks/simulated_fleet.yml -i "$INVENTORY"
mapfile -t TRUCKS < <(ansible trucks -i "$INVENTORY" --list-hosts | tail -n +2 | tr -d ' ')

step "3/5 provision them: ansible-playbook site.yml -i $INVENTORY"
t0=$(date +%s)
ansible-playbook site.yml -i "$INVENTORY"
echo "site.yml on ${#TRUCKS[@]} fresh trucks: $(( $(date +%s) - t0 )) s"

step "4/5 real rows of $(basename "$CSV") sent to each truck's API (on the truck's 127.0.0.1:8080)"
index=0
for truck in "${TRUCKS[@]}"; do
  skip=$(( index * ROWS ))
  python - "$CSV" "$skip" "$ROWS" >"$OUT/$truck.request.json" <<'EOF'
import json, sys
from inference_image.data import load_aps_csv
from inference_image.schema import APS_FEATURES
from inference_image.smoke_vectors import to_json_inputs
csv, skip, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
features = load_aps_csv(csv).features[skip : skip + rows]
print(json.dumps({"instances": [dict(zip(APS_FEATURES, to_json_inputs(r), strict=True)) for r in features]}))
EOF
  docker exec -i "$truck" python3 -c '
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:8080/predict", data=sys.stdin.buffer.read(),
                             headers={"Content-Type": "application/json"})
sys.stdout.write(urllib.request.urlopen(req, timeout=60).read().decode())
' <"$OUT/$truck.request.json" >"$OUT/$truck.response.json"
  python - "$truck" "$skip" "$SHOW" "$OUT/$truck.response.json" <<'EOF'
import json, sys
truck, skip, show = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = json.load(open(sys.argv[4]))
predictions = body["predictions"]
flagged = [i for i, p in enumerate(predictions) if p["label"] == "pos"]
print(f"{truck}: model {body['model_version']} on rows {skip + 1}-{skip + len(predictions)}: "
      f"{len(flagged)} pos (APS failure suspected), {len(predictions) - len(flagged)} neg")
for i in sorted(set(range(min(show, len(predictions)))) | set(flagged[:show])):
    print(f"  row {skip + i + 1:>5}: {predictions[i]['label']}  p={predictions[i]['probability']:.5f}")
EOF
  index=$(( index + 1 ))
done

step "5/5 serving version on each truck (linkedge.edge.edge_facts)"
ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json \
  ansible trucks -i "$INVENTORY" -m linkedge.edge.edge_facts >"$OUT/edge_facts.json"
python - "$OUT/edge_facts.json" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
for host, result in sorted(run["plays"][0]["tasks"][0]["hosts"].items()):
    facts = result.get("ansible_facts", {}).get("linkedge")
    if not facts:
        print(f"{host}: no facts ({result.get('msg', 'unreachable')})")
        continue
    serving, previous = facts.get("serving") or {}, facts.get("previous") or {}
    print(f"{host}: serving {serving.get('model_version')} ({serving.get('status')}, "
          f"health {serving.get('health')}, image {str(serving.get('image_id'))[:19]}), "
          f"previous {previous.get('model_version', 'none')}, Docker {facts.get('docker_version')}")
EOF
echo
echo "demo finished in $(( $(date +%s) - started )) s"
