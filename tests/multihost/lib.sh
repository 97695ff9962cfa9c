# shellcheck shell=bash
# Hosts as Linux network + UTS namespaces, for the multihost tests (issue 19). Source it.
#
# Host hK is the network namespace cmh-hK with one veth (cmhe inside, 10.77.0.(K+1)/24) on
# the bridge cmhbr0 of the root namespace (10.77.0.254/24, where mpirun runs). Programs run
# there through mhExec (or Open MPI's rsh agent, netns_agent.sh), each in a fresh UTS
# namespace whose hostname is hK: to Open MPI, h0 and h1 are two machines that talk TCP.
# The subnet exists only while a test runs; every name starts with "cmh" so nothing else
# is touched. Tests hold /tmp/cohort-multihost.lock for their whole run (one set of hosts
# on the machine at a time), and a test removes whatever a killed run left behind.
#
#   mhRunLocked "$0" "$@"  first line of a test: run it again holding the lock
#   mhInit H WORKDIR       check the capabilities (fail, never skip), clean up
#                          leftovers, create H hosts, trap EXIT to remove them again
#   mhExec HOST CMD...     run CMD on HOST (network namespace + hostname)
#   mhMpiEnv               export the OMPI_MCA_* settings that launch over the namespaces:
#                          rsh agent, no tree spawn, TCP only on the test subnet
#   mhRate HOST RATE       kernel rate limit (tc tbf) on HOST's veth, both directions
#   mhClear HOST           remove it
#   mhWireStart HOST ARGS / mhWireStop   delay, loss, pacing in user space (wire.py)
#   mhPartition HOST / mhHeal HOST   link down / up (the bridge side of HOST's veth)
#   mhKillHost HOST        the host dies: link down first (no FIN/RST escapes), then
#                          SIGKILL every process in its network namespace
#   mhPids HOST            pids of the processes in HOST's network namespace
#   fail MESSAGE           print FAIL and exit 1 (the trap cleans up)

MH_PREFIX=cmh
MH_BRIDGE=cmhbr0
MH_SUBNET=10.77.0
MH_LOCK=/tmp/cohort-multihost.lock
MH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MH_HOSTS=()

fail() {
  echo "FAIL: $*" >&2
  # The log of the run the test was watching (MH_FAIL_LOG), so that a CI failure says why.
  if [[ -n ${MH_FAIL_LOG:-} && -s $MH_FAIL_LOG ]]; then
    echo "--- last lines of $MH_FAIL_LOG:" >&2
    tail -40 "$MH_FAIL_LOG" >&2
  fi
  exit 1
}

mhNs() { echo "$MH_PREFIX-$1"; }
mhVeth() { echo "${MH_PREFIX}v${1#h}"; }  # bridge side of hK's veth
mhIp() { echo "$MH_SUBNET.$((${1#h} + 1))"; }

# Every capability the tests need, each failing with a message that says what is missing.
mhRequire() {
  [[ $(id -u) -eq 0 ]] || fail "multihost tests need root (network namespaces, veth, tc); run as root"
  local tool
  for tool in ip tc ss unshare flock; do
    command -v "$tool" > /dev/null || fail "multihost tests need '$tool' on PATH (iproute2 / util-linux)"
  done
  [[ -x /usr/bin/python3 ]] || fail "multihost tests need /usr/bin/python3 (wire.py, the reachability check)"
  [[ -c /dev/net/tun ]] || fail "multihost tests need /dev/net/tun (wire.py's delay and loss)"
  ip netns list > /dev/null 2>&1 || fail "'ip netns' does not work here: $(ip netns list 2>&1)"
  unshare --uts true 2> /dev/null || fail "cannot create a UTS namespace (unshare --uts): need CAP_SYS_ADMIN"
  unshare --mount true 2> /dev/null || fail "cannot create a mount namespace (unshare --mount): need CAP_SYS_ADMIN"
  command -v mount > /dev/null || fail "multihost tests need 'mount' (util-linux: node-local directories)"
}

# Removes namespaces, veths and the bridge of a previous (killed) run; only cmh* names.
mhCleanupAll() {
  local ns pid
  for ns in $(ip netns list 2> /dev/null | awk '{print $1}' | grep "^$MH_PREFIX-h[0-9]*$"); do
    for pid in $(ip netns pids "$ns" 2> /dev/null); do kill -9 "$pid" 2> /dev/null; done
    ip netns del "$ns" 2> /dev/null
  done
  local dev
  for dev in $(ip -o link show 2> /dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
    grep "^${MH_PREFIX}v[0-9]*$"); do
    ip link del "$dev" 2> /dev/null
  done
  ip link del "$MH_BRIDGE" 2> /dev/null
  true
}

mhAddHost() {
  local h=$1 ns veth
  ns=$(mhNs "$h")
  veth=$(mhVeth "$h")
  ip netns add "$ns" || fail "ip netns add $ns"
  ip link add "$veth" type veth peer name cmhe netns "$ns" || fail "veth pair for $h"
  ip link set "$veth" master "$MH_BRIDGE" up || fail "attach $veth to $MH_BRIDGE"
  ip -n "$ns" addr add "$(mhIp "$h")/24" dev cmhe || fail "address on $h"
  ip -n "$ns" link set lo up || fail "lo up on $h"
  ip -n "$ns" link set cmhe up || fail "cmhe up on $h"
  MH_HOSTS+=("$h")
}

mhTeardown() {
  local rc=$?
  trap - EXIT
  mhWireStop
  mhCleanupAll
  exit "$rc"
}

# First thing in a test script: mhRunLocked "$0" "$@". Runs the script again under
# flock(1), which holds the lock itself and closes it for the script (-o): an mpirun that a
# killed run leaves behind must not keep the next run waiting.
mhRunLocked() {
  [[ ${MH_LOCKED:-} == 1 ]] && return 0
  command -v flock > /dev/null || fail "multihost tests need 'flock' (util-linux)"
  MH_LOCKED=1 flock -o -w 600 -E 75 "$MH_LOCK" bash "$@"
  local rc=$?
  ((rc == 75)) && fail "waited 600 s for $MH_LOCK (another multihost test holds it)"
  exit "$rc"
}

mhInit() {
  local n=$1 i
  MH_WORK=$2
  mhRequire
  [[ ${MH_LOCKED:-} == 1 ]] || fail "mhInit: start the test through mhRunLocked"
  trap mhTeardown EXIT
  trap 'exit 143' TERM INT
  mhCleanupAll
  ip link add "$MH_BRIDGE" type bridge || fail "cannot create bridge $MH_BRIDGE: no bridge support?"
  ip addr add "$MH_SUBNET.254/24" dev "$MH_BRIDGE" || fail "address on $MH_BRIDGE"
  ip link set "$MH_BRIDGE" up || fail "$MH_BRIDGE up"
  for ((i = 0; i < n; i++)); do mhAddHost "h$i"; done
  # tbf (rate limits) is a kernel module: find out now rather than in the middle of a test.
  tc qdisc add dev "$(mhVeth h0)" root tbf rate 100mbit burst 64kb latency 100ms 2> /dev/null ||
    fail "tc qdisc tbf does not work here (kernel module sch_tbf missing?)"
  tc qdisc del dev "$(mhVeth h0)" root
  rm -rf "$MH_WORK"
  mkdir -p "$MH_WORK"
  for ((i = 1; i < n; i++)); do mhCheckReach h0 "h$i"; done
}

# A TCP connection from host A to host B (python3's socket module: no ping here).
mhCheckReach() {
  local ip
  ip=$(mhIp "$2")
  mhExec "$2" /usr/bin/python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7701)); s.listen(1); s.settimeout(10); c, _ = s.accept(); c.close()
' "$ip" &
  local listener=$!
  mhExec "$1" /usr/bin/python3 -c '
import socket, sys, time
for _ in range(50):
    try:
        socket.create_connection((sys.argv[1], 7701), timeout=2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
' "$ip" || fail "$1 cannot reach $2 ($ip) over $MH_BRIDGE (bridge netfilter? firewall?)"
  wait "$listener"
}

mhExec() {
  local h=$1
  shift
  ip netns exec "$(mhNs "$h")" unshare --uts -- /bin/sh -c 'hostname "$0" && exec "$@"' "$h" "$@"
}

mhPids() { ip netns pids "$(mhNs "$1")"; }

mhMpiEnv() {
  export OMPI_MCA_plm_rsh_agent=$MH_DIR/netns_agent.sh
  export OMPI_MCA_plm_rsh_no_tree_spawn=1
  export OMPI_MCA_oob_tcp_if_include=$MH_SUBNET.0/24
  export OMPI_MCA_btl_tcp_if_include=$MH_SUBNET.0/24
  export OMPI_MCA_btl=tcp,self
  export COHORT_MH_PREFIX=$MH_PREFIX
}

# Delay / loss / pacing through wire.py (this kernel has no sch_netem). mhWireStart HOST
# [--delay-ms D] [--loss P] [--rate-mbit R]: packets from or to HOST take the faulty wire
# until mhWireStop; the TCP connections already open survive both switches.
mhWireStart() {
  local h=$1 hosts i
  shift
  hosts=$(IFS=,; echo "${MH_HOSTS[*]}")
  rm -f "$MH_WORK/wire.ready"
  /usr/bin/python3 "$MH_DIR/wire.py" --prefix "$MH_PREFIX" --subnet "$MH_SUBNET" \
    --hosts "$hosts" --faulty "$h" --ready "$MH_WORK/wire.ready" "$@" 2>> "$MH_WORK/wire.log" &
  MH_WIRE_PID=$!
  for ((i = 0; i < 100; i++)); do
    [[ -s $MH_WORK/wire.ready ]] && return 0
    kill -0 "$MH_WIRE_PID" 2> /dev/null || break
    sleep 0.1
  done
  cat "$MH_WORK/wire.log" >&2
  fail "wire.py did not start (needs /dev/net/tun)"
}
mhWireStop() {
  [[ -n ${MH_WIRE_PID:-} ]] || return 0
  kill -TERM "$MH_WIRE_PID" 2> /dev/null
  wait "$MH_WIRE_PID" 2> /dev/null
  MH_WIRE_PID=
}

# tbf on both directions of hK's link: egress of the bridge-side veth (traffic to hK) and
# egress of cmhe inside the namespace (traffic from hK): a kernel rate limit on the veth.
mhRate() {
  local h=$1 rate=$2
  tc qdisc replace dev "$(mhVeth "$h")" root tbf rate "$rate" burst 32kb latency 2s ||
    fail "tc tbf rate $rate on $(mhVeth "$h")"
  ip netns exec "$(mhNs "$h")" tc qdisc replace dev cmhe root tbf rate "$rate" burst 32kb latency 2s ||
    fail "tc tbf rate $rate in $h"
}
mhClear() {
  tc qdisc del dev "$(mhVeth "$1")" root 2> /dev/null
  ip netns exec "$(mhNs "$1")" tc qdisc del dev cmhe root 2> /dev/null
  true
}
mhPartition() { ip link set "$(mhVeth "$1")" down || fail "link down $1"; }
mhHeal() { ip link set "$(mhVeth "$1")" up || fail "link up $1"; }

mhKillHost() {
  local pid
  mhPartition "$1"
  for pid in $(mhPids "$1"); do kill -9 "$pid" 2> /dev/null; done
}
