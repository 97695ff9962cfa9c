#!/usr/bin/env bash
# The disk's own limits for scripts/bench ckpt, on the filesystem of DIR: MIB MiB written by
# dd to a NEW file (removed after) with O_DIRECT and buffered, both fdatasync'd, and read
# back cold (page cache dropped), buffered and with O_DIRECT (each the first read). Prints
#   DD <variant> <bytes> <seconds>
# and `DDCACHE drop_caches|dd_nocache` (how the cache was emptied: root writes
# /proc/sys/vm/drop_caches; otherwise dd iflag=nocache evicts the file's pages).
set -euo pipefail
dir=$1 mib=$2
mkdir -p "$dir"
count=$(((mib + 7) / 8))
file=$dir/dd-$$.bin
drop() {  # after sync: nothing dirty left to write back during the next measurement
  sync
  if echo 3 2> /dev/null > /proc/sys/vm/drop_caches; then
    method=drop_caches
  else
    method=dd_nocache
    [[ -e $file ]] && dd if="$file" iflag=nocache count=0 status=none
  fi
}
one() {  # variant, dd arguments...
  local out
  out=$(LC_ALL=C dd "${@:2}" 2>&1 | grep ' copied, ')
  awk -v v="$1" '{print "DD", v, $1, $(NF - 3)}' <<< "$out"
}
# Each read is the first read of a file just written, as the checkpoint loads are: on a VM
# disk a second cold read may come from the host's cache.
drop
one direct_write if=/dev/zero of="$file" bs=8M count="$count" oflag=direct conv=fdatasync
drop
one read_cold if="$file" of=/dev/null bs=8M
rm -f "$file"
drop
one buffered_write if=/dev/zero of="$file" bs=8M count="$count" conv=fdatasync
drop
one read_cold_direct if="$file" of=/dev/null bs=8M iflag=direct
rm -f "$file"
sync
echo "DDCACHE $method"
