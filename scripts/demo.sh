#!/usr/bin/env bash
# make demo: three lambdadb nodes and the example shop on 127.0.0.1, data
# under bin/demo/, a few hundred orders loaded; Ctrl-C stops everything.
# Environment: DEMO_ORDERS (default 300), DEMO_PORT (the shop, 8080),
# DEMO_NODE_PORT (the first node, 7001; the others follow), DEMO_KEEP=1
# keeps the data of an earlier run (default: start afresh).
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${DEMO_ORDERS:-300}
PORT=${DEMO_PORT:-8080}
NODE_PORT=${DEMO_NODE_PORT:-7001}
DATA=bin/demo
LDB=bin/lambdadb
SHOP=bin/shop

n1=127.0.0.1:$NODE_PORT n2=127.0.0.1:$((NODE_PORT + 1)) n3=127.0.0.1:$((NODE_PORT + 2))
peers=n1=$n1,n2=$n2,n3=$n3
pids=()

stop() {
	trap - INT TERM EXIT
	if ((${#pids[@]})); then
		echo
		echo "stopping the shop and the nodes..."
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	# Nodes started again by hand (see below) stop too.
	pkill -TERM -f -- "--data $DATA/n[123] " 2>/dev/null || true
	echo "stopped (data in $DATA/)"
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

if [[ -z "${DEMO_KEEP:-}" ]]; then
	rm -rf "$DATA"
fi
mkdir -p "$DATA"

i=0
for addr in $n1 $n2 $n3; do
	i=$((i + 1))
	"$LDB" serve --id "n$i" --addr "$addr" --data "$DATA/n$i" --peers "$peers" >"$DATA/n$i.log" 2>&1 &
	pids+=($!)
done

echo "waiting for the cluster..."
for _ in $(seq 1 100); do
	# The shop retries its set-up until every shard has a leader.
	if "$LDB" status --server "http://$n1" >/dev/null 2>&1; then
		break
	fi
	sleep 0.2
done

"$SHOP" --lambdadb "$n1,$n2,$n3" --listen "127.0.0.1:$PORT" --handlers bin/examples \
	--load "$ORDERS" >"$DATA/shop.log" 2>&1 &
pids+=($!)

echo "setting up the shop and loading $ORDERS orders..."
for _ in $(seq 1 600); do
	if grep -q "orders loaded" "$DATA/shop.log" 2>/dev/null; then
		break
	fi
	if ! kill -0 "${pids[3]}" 2>/dev/null; then
		echo "the shop exited:"
		cat "$DATA/shop.log"
		exit 1
	fi
	sleep 0.2
done
grep "orders loaded" "$DATA/shop.log" | sed 's/^.*msg=/  /' || true

cat <<MSG

lambdadb shop demo
  shop        http://127.0.0.1:$PORT/
  analytics   http://127.0.0.1:$PORT/analytics
  live orders http://127.0.0.1:$PORT/live
  a customer  http://127.0.0.1:$PORT/customers/ada
  API         curl -X POST -d '{"customer":"ada","region":"eu","product":"mug","qty":2,"amount":15.8}' http://127.0.0.1:$PORT/api/orders
              curl http://127.0.0.1:$PORT/api/customers/ada
              curl http://127.0.0.1:$PORT/api/analytics
  nodes       http://$n1/ui/  http://$n2/ui/  http://$n3/ui/   (console)
              $LDB status --server http://$n1
  logs        $DATA/*.log

Ctrl-C stops the shop and the nodes.
MSG
# A node may be killed to watch the shop keep serving on the other two;
# only the shop's exit ends the demo.
shop=${pids[3]}
while true; do
	exited=
	status=0
	wait -n -p exited "${pids[@]}" || status=$?
	if [[ -z "$exited" ]]; then
		continue
	fi
	if [[ "$exited" == "$shop" ]]; then
		echo "the shop exited (status $status); see $DATA/shop.log"
		exit 1
	fi
	for k in 0 1 2; do
		if [[ "${pids[$k]}" == "$exited" ]]; then
			id=n$((k + 1))
			addr=$(echo "$n1 $n2 $n3" | cut -d' ' -f$((k + 1)))
			unset 'pids[k]'
			cat <<MSG

node $id exited (status $status; $DATA/$id.log); the shop keeps serving
through the other nodes. Start it again with:
  $LDB serve --id $id --addr $addr --data $DATA/$id --peers $peers >>$DATA/$id.log 2>&1 &
(Ctrl-C here stops it too.)
MSG
		fi
	done
done
