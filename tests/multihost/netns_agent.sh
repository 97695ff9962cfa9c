#!/bin/sh
# Open MPI's rsh agent for the multihost tests (OMPI_MCA_plm_rsh_agent): instead of ssh to
# HOST, run the command line in HOST's network namespace ($COHORT_MH_PREFIX-HOST) with the
# hostname HOST. Like ssh, the remaining words are joined and run by a shell.
# With COHORT_MH_NODE_LOCAL=DIR, HOST also gets a disk of its own there: in a private mount
# namespace, DIR.HOST is bind-mounted over DIR (a node-local output directory).
#   netns_agent.sh HOST WORD...
host=$1
shift
exec ip netns exec "${COHORT_MH_PREFIX:-cmh}-$host" unshare --uts --mount -- \
  /bin/sh -c 'hostname "$0" || exit 1
if [ -n "$COHORT_MH_NODE_LOCAL" ]; then
  mkdir -p "$COHORT_MH_NODE_LOCAL.$0" "$COHORT_MH_NODE_LOCAL" &&
    mount --bind "$COHORT_MH_NODE_LOCAL.$0" "$COHORT_MH_NODE_LOCAL" || exit 1
fi
shift && eval "$*"' "$host" - "$@"
