#!/bin/busybox sh
# /init of the guest initramfs (cargo xtask test --kernel): fimd's realtime checks on this
# kernel. Every result is an "@@" line on the serial console; the last is "@@ exit=N".
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# The daemon's metrics listen on loopback.
ifconfig lo 127.0.0.1 up
fails=0
ok() { echo "@@ ok   $1"; }
fail() { echo "@@ FAIL $1: $2"; fails=$((fails + 1)); }
finish() {
    echo "@@ exit=$fails"
    sync
    poweroff -f
}
echo "@@ kernel $(uname -r)"
# The kernel's modules, dependencies first (xtask/src/kernel/modules.rs wrote the order).
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/modules/$m.ko" 2> /tmp/insmod.err || fail "insmod $m" "$(cat /tmp/insmod.err)"
done < /modules/order
mkdir -p /mnt
if ! mount -t ext4 -o loop /ext4.img /mnt; then
    fail mount "cannot mount the ext4 image"
    finish
fi

T=/mnt/t
mkdir -p "$T/tmp" /tmpw
# A second watch on tmpfs: fanotify can mark tmpfs only from Linux 5.13 (tmpfs got an fsid).
mount -t tmpfs tmpfs /tmpw
# Whether tmpfs changes ctime on setxattr here (shmem_xattr_handler_set did not before 6.6):
# where it does not, the VFS tiers see setxattr only at security_inode_post_setxattr.
echo probe > /tmpw/.xattr-probe
before=$(stat -c %Z /tmpw/.xattr-probe)
sleep 1.1
setfattr -n trusted.p -v v /tmpw/.xattr-probe
if [ "$(stat -c %Z /tmpw/.xattr-probe)" = "$before" ]; then
    echo "@@ kernel fact: tmpfs on $(uname -r) leaves ctime alone on setxattr: the VFS tiers must see it at security_inode_post_setxattr"
fi
rm -f /tmpw/.xattr-probe
# Each filesystem's tree, as NAME=DIR.
TREES="ext4=$T/tree tmpfs=/tmpw/tree"
# xfs and btrfs are on virtio disks named by their serial: each must mount where the kernel
# has it; a kernel without it at all is a fact about the kernel (xtask wrote /modules/absent).
disk() {
    for b in /sys/block/vd*; do
        [ "$(cat "$b/serial" 2> /dev/null)" = "$1" ] && echo "/dev/${b##*/}" && return
    done
}
for fs in xfs btrfs; do
    if grep -qx "$fs" /modules/absent; then
        echo "@@ kernel fact: Linux $(uname -r) has no $fs, neither built in nor as a module: not tested on it"
        continue
    fi
    w=0
    while [ -z "$(disk $fs)" ] && [ $w -lt 100 ]; do
        sleep 0.1
        w=$((w + 1))
    done
    mkdir -p "/$fs"
    if ! grep -qw "$fs" /proc/filesystems; then
        fail "mount $fs" "the kernel has $fs but it is not registered in /proc/filesystems"
    elif [ -z "$(disk $fs)" ]; then
        fail "mount $fs" "no virtio disk with serial $fs: $(ls /sys/block)"
    elif ! mount -t "$fs" "$(disk $fs)" "/$fs" 2> /tmp/mount.err; then
        fail "mount $fs" "$(cat /tmp/mount.err); $(dmesg | tail -3)"
    else
        TREES="$TREES $fs=/$fs/tree"
    fi
done
echo "@@ filesystems: $TREES"
# btrfs keys need btrfs's types (the subvolume's anon_dev): in vmlinux when btrfs is built in,
# else in its module BTF, which kernels before 5.11 do not have. There the eBPF sensor must
# refuse btrfs watches loudly (watch_failed) rather than watch blind.
BTRFS_REFUSED=""
if [ -e /sys/module/btrfs ] && [ -e /modules/btrfs.ko ] && [ ! -e /sys/kernel/btf/btrfs ]; then
    BTRFS_REFUSED=1
    echo "@@ kernel fact: btrfs is a module and this kernel has no module BTF (/sys/kernel/btf/btrfs, Linux 5.11+): the eBPF tiers must refuse btrfs watches"
fi
# The eBPF tier this kernel must get, from the kernel's own limits (this script may read the
# version, fimd does not): the ctime tracepoints exist from 6.13, fentry before that.
case "$(uname -r)" in
5.* | 6.[0-9].* | 6.1[0-2].*) TIER_HOOK=fentry/file_modified ;;
*) TIER_HOOK=raw_tracepoint/ctime_ns_xchg ;;
esac
FILES="write append pwrite trunc falloc mmap chmod chown times xattr renamed link unlink"
# A fresh tree on each filesystem, state and alert log for each sensor run.
fresh() {
    rm -rf "$T/state"
    for t in $TREES; do
        d=${t#*=}
        rm -rf "$d"
        mkdir -p "$d/gone"
        for f in $FILES nocm; do
            echo "content of $f" > "$d/$f"
        done
    done
    : > "$T/alerts.jsonl"
}
config() {
    {
        echo "state_dir = \"$T/state\""
        for t in $TREES; do
            printf '[[watch]]\npath = "%s"\n' "${t#*=}"
        done
    } > "$T/fimd.toml"
    cat >> "$T/fimd.toml" <<CONF
[alerts]
jsonl = "$T/alerts.jsonl"
[metrics]
listen = "127.0.0.1:9464"
[realtime]
sensor = "$1"
CONF
}

# check CASE PATH ACTION PID: an alert on PATH with ACTION, naming PID, within 20 s.
check() {
    n=0
    while [ $n -lt 200 ]; do
        if grep -F "\"path\":\"$2\"" "$T/alerts.jsonl" | grep -F "\"action\":\"$3\"" |
            grep -qE "\"pid\":$4[,}]"; then
            ok "$1 ($3, pid $4)"
            return
        fi
        sleep 0.1
        n=$((n + 1))
    done
    fail "$1" "no $3 alert on $2 by pid $4; alerts on it: $(grep -F "\"path\":\"$2\"" "$T/alerts.jsonl" | head -c 600)"
}
# op CASE PATH ACTION COMMAND: COMMAND runs in its own process (sh -c; `exec` keeps the pid).
op() {
    c="$LABEL/$FS/$1"
    p=$2
    a=$3
    shift 3
    sh -c "$*" &
    pid=$!
    if ! wait $pid; then
        fail "$c" "the command failed: $*"
        return
    fi
    check "$c" "$p" "$a" $pid
}

# The daemon's count of kernel records (fim_kernel_events_total).
events() {
    wget -qO- http://127.0.0.1:9464/metrics 2>/dev/null | grep '^fim_kernel_events_total ' | cut -d' ' -f2
}

# ops SENSOR: every operation on the tree $D of filesystem $FS.
ops() {
    op write "$D/write" updated "echo rewritten > $D/write"
    op append "$D/append" updated "echo more >> $D/append"
    op pwrite "$D/pwrite" updated "exec dd if=/init of=$D/pwrite bs=1 count=4 seek=2 conv=notrunc 2>/dev/null"
    op truncate "$D/trunc" updated "exec truncate -s 2 $D/trunc"
    op fallocate "$D/falloc" updated "exec fallocate -l 65536 $D/falloc"
    # fanotify cannot see stores through a mapping: that tier rechecks mapped files instead,
    # and this writer unmaps and exits at once, so only the eBPF tiers must name it.
    [ "$1" != fanotify ] && op mmap "$D/mmap" updated "exec mmap_write $D/mmap"
    op chmod "$D/chmod" attributes_modified "exec chmod 600 $D/chmod"
    op chown "$D/chown" attributes_modified "exec chown 1:1 $D/chown"
    op utimes "$D/times" attributes_modified "exec touch -d '2001-01-01 00:00:00' $D/times"
    # tmpfs takes user.* xattrs from 6.6 on only; trusted.* (root) on every kernel.
    ns=user
    [ "$FS" = tmpfs ] && ns=trusted
    op setxattr "$D/xattr" attributes_modified "exec setfattr -n $ns.k -v v $D/xattr"
    op create "$D/new" created "echo new > $D/new"
    op mkdir "$D/newdir" created "exec mkdir $D/newdir"
    op create-in-new-dir "$D/newdir/f" created "echo inside > $D/newdir/f"
    op symlink "$D/sym" created "exec ln -s target $D/sym"
    op link "$D/linked" created "exec ln $D/link $D/linked"
    op rename "$D/moved" moved "exec mv $D/renamed $D/moved"
    op unlink "$D/unlink" deleted "exec rm $D/unlink"
    op rmdir "$D/gone" deleted "exec rmdir $D/gone"
    if [ "$FS" = xfs ]; then
        # XFS invisible I/O: a descriptor from XFS_IOC_OPEN_BY_HANDLE has FMODE_NOCMTIME, and
        # its writes leave ctime and mtime alone; every tier must still see them.
        op nocmtime "$D/nocm" updated "exec nocmtime_write $D/nocm > $T/nocm.out"
        echo "@@ $LABEL/$FS: $(cat $T/nocm.out)"
    fi
}

# suite LABEL SENSOR EXPECT: `fimd run` with `sensor = SENSOR` must attach a sensor whose start
# line contains EXPECT, then alert on every operation with the writer's pid.
suite() {
    LABEL=$1
    fresh
    config "$2"
    fimd -c "$T/fimd.toml" init > "$T/init.out" 2>&1 || fail "$LABEL/init" "$(cat "$T/init.out")"
    # Emptied before the start: the daemon's own redirection may come after the first look.
    : > "$T/run.err"
    fimd -c "$T/fimd.toml" run > /dev/null 2>> "$T/run.err" &
    RUN=$!
    i=0
    while [ $i -lt 600 ] && ! grep -q "; ready" "$T/run.err"; do
        if ! kill -0 $RUN 2>/dev/null; then
            fail "$LABEL/run" "exited: $(cat "$T/run.err")"
            return
        fi
        sleep 0.1
        i=$((i + 1))
    done
    if ! grep -q "; ready" "$T/run.err"; then
        fail "$LABEL/run" "not ready after $i polls (uptime $(cut -d' ' -f1 /proc/uptime) s): $(cat "$T/run.err"); $(grep State /proc/$RUN/status 2>/dev/null); $(head -8 /proc/$RUN/stack 2>/dev/null | tr '\n' ' ')"
        kill $RUN
        wait $RUN
        return
    fi
    echo "@@ $LABEL: $(grep 'sensor attached' "$T/run.err")"
    if grep 'sensor attached' "$T/run.err" | grep -qF "$3"; then
        ok "$LABEL: the sensor is the one expected ($3)"
    else
        fail "$LABEL" "expected a sensor with $3"
    fi
    for t in $TREES; do
        FS=${t%%=*}
        D=${t#*=}
        failed="$(grep -F "\"path\":\"$D\"" "$T/alerts.jsonl" | grep -F '"action":"watch_failed"' | head -c 400)"
        if [ "$FS" = btrfs ] && [ -n "$BTRFS_REFUSED" ] && [ "$2" != fanotify ]; then
            if [ -n "$failed" ]; then
                ok "$LABEL/$FS: refused loudly: $failed"
            else
                fail "$LABEL/$FS" "btrfs watched without its types, and no watch_failed alert"
            fi
            continue
        fi
        if [ "$2" = fanotify ] && [ -n "$failed" ]; then
            # The kernel's own limit, not fimd's choice: fanotify marks tmpfs from 5.13 on.
            if [ "$FS" = tmpfs ]; then
                ok "$LABEL/$FS watch: reported as not watchable here (watch_failed), the rest still watched"
            else
                fail "$LABEL/$FS" "fanotify cannot watch $D: $failed"
            fi
            continue
        fi
        ops "$2"
    done
    # Reads are not changes: 20 reads of a watched file by another process add no kernel
    # record (the VFS tier's atime filter; fanotify does not ask for reads).
    last=""
    k=0
    while [ $k -lt 10 ] && [ "$(events)" != "$last" ]; do
        last=$(events)
        sleep 1
        k=$((k + 1))
    done
    D="$T/tree"
    sh -c "for r in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do cat $D/append > /dev/null; ls $D > /dev/null; done"
    sleep 1
    now=$(events)
    if [ -n "$last" ] && [ "$now" = "$last" ]; then
        ok "$LABEL/reads: 20 reads of a watched file and directory made no kernel record ($now records in all)"
    else
        fail "$LABEL/reads" "kernel records went from '$last' to '$now' over 20 reads"
    fi
    kill $RUN
    wait $RUN
    rc=$?
    [ $rc -eq 0 ] && ok "$LABEL: SIGTERM: stopped cleanly" || fail "$LABEL/SIGTERM" "exit $rc"
}

# The sensor `auto` chooses, in the self-test and in the daemon: the best eBPF tier.
fresh
config auto
TMPDIR="$T/tmp" fimd -c "$T/fimd.toml" selftest > "$T/selftest.out" 2>&1
rc=$?
sed 's/^/@@ selftest: /' "$T/selftest.out"
[ $rc -eq 0 ] && ok selftest || fail selftest "exit $rc"
grep -qF "$TIER_HOOK" "$T/selftest.out" && ok "selftest: uses $TIER_HOOK" ||
    fail selftest "the self-test does not report $TIER_HOOK"
TMPDIR="$T/tmp" suite auto auto "$TIER_HOOK"
# A forced eBPF sensor loads the same tier; the kprobe variant (for kernels without BPF
# trampolines) is forced through the test setting FIMD_EBPF_TIER.
case "$TIER_HOOK" in
fentry/*)
    TMPDIR="$T/tmp" FIMD_EBPF_TIER=kprobe suite kprobe ebpf kprobe/file_modified
    ;;
esac
# The fanotify tier, forced, must work here too.
suite fanotify fanotify "fanotify sensor attached"
finish
