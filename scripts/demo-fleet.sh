#!/usr/bin/env bash
# Fleet demo: a real release on simulated trucks.
#  1. train the APS classifier with the full nested evaluation, build the image, export the release
#  2. create the simulated trucks of inventories/simulated (Debian 12 + systemd, no Docker yet)
#  3. ansible-playbook site.yml -i inventories/simulated (Docker engine, the truck's MQTT bus,
#     inference service answering over HTTP and MQTT)
#  4. send each truck real rows of the unlabeled APS test sample, print the predictions
#  5. a sensor on each truck publishes rows on its MQTT bus; print the predictions that arrive
#  6. print each truck's serving version (linkedge.edge.edge_facts)
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

step "1/6 train on $DATA (nested CV for the official cost), build $IMAGE, export the release"
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

step "2/6 create the simulated trucks ($INVENTORY)"
trap cleanup EXIT
ansible-playbook playbooks/simulated_fleet.yml -i "$INVENTORY"
mapfile -t TRUCKS < <(ansible trucks -i "$INVENTORY" --list-hosts | tail -n +2 | tr -d ' ')

# The MQTT bus: throwaway passwords for the demo (a real fleet keeps them in Ansible Vault).
python - "$OUT/mqtt.json" <<'EOF'
import json, secrets, sys
inference, status, sensor = (secrets.token_urlsafe(24) for _ in range(3))
answers = [{"access": "read", "topic": "linkedge/{{ inventory_hostname }}/aps/" + leaf}
           for leaf in ("predictions", "errors")]
json.dump({
    "inference_service_mqtt_enabled": True,
    "inference_service_mqtt_password": inference,
    "inference_service_mqtt_status_password": status,
    "mqtt_broker_clients": [
        {"name": "linkedge-inference", "password": inference, "role": "inference"},
        {"name": "linkedge-status", "password": status, "role": "status"},
        {"name": "demo-sensor", "password": sensor, "role": "sensor", "extra_topics": answers},
    ],
    "demo_sensor_password": sensor,
}, open(sys.argv[1], "w"))
EOF
chmod 600 "$OUT/mqtt.json"

step "3/6 provision them: ansible-playbook site.yml -i $INVENTORY (with the MQTT bus)"
t0=$(date +%s)
ansible-playbook site.yml -i "$INVENTORY" -e "@$OUT/mqtt.json"
echo "site.yml on ${#TRUCKS[@]} fresh trucks: $(( $(date +%s) - t0 )) s"

step "4/6 real rows of $(basename "$CSV") sent to each truck's API (on the truck's 127.0.0.1:8080)"
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

step "5/6 a sensor on each truck publishes rows of $(basename "$CSV") on its MQTT bus"
python -c 'import json, sys; print(json.load(open(sys.argv[1]))["demo_sensor_password"])' \
  "$OUT/mqtt.json" >"$OUT/sensor.password"
chmod 600 "$OUT/sensor.password"
for truck in "${TRUCKS[@]}"; do
  # The sensor is `linkedge-image sensor` from the serving image itself, on the truck's network.
  docker cp "$CSV" "$truck:/root/demo-rows.csv" >/dev/null
  docker cp "$OUT/sensor.password" "$truck:/root/demo-sensor.password" >/dev/null
  docker exec "$truck" chmod 644 /root/demo-rows.csv /root/demo-sensor.password
  image=$(docker exec "$truck" docker inspect -f '{{.Image}}' linkedge-inference)
  docker exec "$truck" timeout 30 mosquitto_sub -h 127.0.0.1 -V mqttv5 -u demo-sensor \
    -P "$(cat "$OUT/sensor.password")" -t "linkedge/$truck/aps/predictions" -C "$SHOW" \
    >"$OUT/$truck.mqtt-answers.txt" &
  subscriber=$!
  sleep 1
  docker exec "$truck" docker run --rm --network host --read-only --tmpfs /tmp --cap-drop ALL \
    -v /root/demo-rows.csv:/data/rows.csv:ro -v /root/demo-sensor.password:/data/password:ro \
    --entrypoint python3 "$image" -m inference_image sensor --host 127.0.0.1 --truck "$truck" \
    --username demo-sensor --password-file /data/password --rows /data/rows.csv \
    --count "$ROWS" --rate 200 --wait-answers >"$OUT/$truck.sensor.json"
  wait "$subscriber" || true
  python - "$truck" "$OUT/$truck.sensor.json" "$OUT/$truck.mqtt-answers.txt" <<'EOF'
import json, sys
truck, report = sys.argv[1], json.load(open(sys.argv[2]))
latency = report.get("latency_ms") or {}
print(f"{truck}: {report['sent']} messages on {report['topic']}: {report.get('answered')} "
      f"answered, {report.get('lost')} lost, {report.get('duplicated')} answered twice; "
      f"publish-to-answer p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms")
for line in open(sys.argv[3]).read().splitlines():
    answer = json.loads(line)
    first = answer["predictions"][0]
    print(f"  {answer['id']}: {first['label']}  p={first['probability']:.5f} ({answer['model_version']})")
EOF
done

step "6/6 serving version on each truck (linkedge.edge.edge_facts)"
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
