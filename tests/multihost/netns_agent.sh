#!/bin/sh
# Open MPI's rsh agent for the multihost tests (OMPI_MCA_plm_rsh_agent): instead of ssh to
# HOST, run the command line in HOST's network namespace ($COHORT_MH_PREFIX-HOST) with the
# hostname HOST. Like ssh, the remaining words are joined and run by a shell.
#   netns_agent.sh HOST WORD...
host=$1
shift
exec ip netns exec "${COHORT_MH_PREFIX:-cmh}-$host" unshare --uts -- \
  /bin/sh -c 'hostname "$0" && shift && eval "$*"' "$host" - "$@"
