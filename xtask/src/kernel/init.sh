#!/bin/busybox sh
# /init of the guest initramfs (cargo xtask test --kernel): fimd's realtime checks on this
# kernel. Every result is an "@@" line on the serial console; the last is "@@ exit=N".
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
[ -f /loop.ko ] && insmod /loop.ko
fails=0
ok() { echo "@@ ok   $1"; }
fail() { echo "@@ FAIL $1: $2"; fails=$((fails + 1)); }
finish() {
    echo "@@ exit=$fails"
    sync
    poweroff -f
}
echo "@@ kernel $(uname -r)"
mkdir -p /mnt
if ! mount -t ext4 -o loop /ext4.img /mnt; then
    fail mount "cannot mount the ext4 image"
    finish
fi

T=/mnt/t
mkdir -p "$T/tree" "$T/tmp"
# A second watch on tmpfs: fanotify can mark tmpfs only from Linux 5.13 (tmpfs got an fsid).
mkdir -p /tmpw
mount -t tmpfs tmpfs /tmpw
mkdir /tmpw/tree
for f in write chmod; do
    echo "content of $f" > "/tmpw/tree/$f"
done
for f in write append pwrite trunc falloc chmod chown times xattr renamed link unlink; do
    echo "content of $f" > "$T/tree/$f"
done
mkdir "$T/tree/gone"
config() {
    cat > "$T/fimd.toml" <<CONF
state_dir = "$T/state"
[[watch]]
path = "$T/tree"
[[watch]]
path = "/tmpw/tree"
[alerts]
jsonl = "$T/alerts.jsonl"
[realtime]
sensor = "$1"
CONF
}

# A forced eBPF sensor either loads or exits 2 with its reason: never a silent fallback.
config ebpf
fimd -c "$T/fimd.toml" init > "$T/init.out" 2>&1 || fail init "$(cat "$T/init.out")"
fimd -c "$T/fimd.toml" run > /dev/null 2> "$T/ebpf.err" &
EBPF=$!
i=0
while [ $i -lt 600 ] && ! grep -q "; ready" "$T/ebpf.err" && kill -0 $EBPF 2>/dev/null; do
    sleep 0.1
    i=$((i + 1))
done
if grep -q "; ready" "$T/ebpf.err"; then
    echo "@@ ebpf: $(grep 'sensor attached' "$T/ebpf.err")"
    kill $EBPF
    wait $EBPF
    EBPF_LOADS=1
else
    wait $EBPF
    rc=$?
    echo "@@ ebpf: exit $rc: $(head -c 300 "$T/ebpf.err")"
    [ $rc -eq 2 ] && ok "forced ebpf: exit 2 with the reason" || fail "forced ebpf" "exit $rc, not 2"
    EBPF_LOADS=0
fi

# The sensor `auto` chooses, in the self-test and in the daemon.
config auto
TMPDIR="$T/tmp" fimd -c "$T/fimd.toml" selftest > "$T/selftest.out" 2>&1
rc=$?
sed 's/^/@@ selftest: /' "$T/selftest.out"
[ $rc -eq 0 ] && ok selftest || fail selftest "exit $rc"
: > "$T/alerts.jsonl"
fimd -c "$T/fimd.toml" run > /dev/null 2> "$T/run.err" &
RUN=$!
i=0
while [ $i -lt 600 ] && ! grep -q "; ready" "$T/run.err"; do
    if ! kill -0 $RUN 2>/dev/null; then
        fail run "exited: $(cat "$T/run.err")"
        finish
    fi
    sleep 0.1
    i=$((i + 1))
done
grep -q "; ready" "$T/run.err" || { fail run "not ready in 60 s: $(cat "$T/run.err")"; finish; }
echo "@@ run: $(grep 'sensor attached' "$T/run.err")"
if [ $EBPF_LOADS = 0 ] && ! grep -q "fanotify sensor attached" "$T/run.err"; then
    fail auto "the eBPF sensor does not load here, and auto did not fall back to fanotify"
fi

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
    c=$1
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
D="$T/tree"
op write "$D/write" updated "echo rewritten > $D/write"
op append "$D/append" updated "echo more >> $D/append"
op pwrite "$D/pwrite" updated "exec dd if=/init of=$D/pwrite bs=1 count=4 seek=2 conv=notrunc 2>/dev/null"
op truncate "$D/trunc" updated "exec truncate -s 2 $D/trunc"
op fallocate "$D/falloc" updated "exec fallocate -l 65536 $D/falloc"
op chmod "$D/chmod" attributes_modified "exec chmod 600 $D/chmod"
op chown "$D/chown" attributes_modified "exec chown 1:1 $D/chown"
op utimes "$D/times" attributes_modified "exec touch -d '2001-01-01 00:00:00' $D/times"
op setxattr "$D/xattr" attributes_modified "exec setfattr -n user.k -v v $D/xattr"
op create "$D/new" created "echo new > $D/new"
op mkdir "$D/newdir" created "exec mkdir $D/newdir"
op create-in-new-dir "$D/newdir/f" created "echo inside > $D/newdir/f"
op symlink "$D/sym" created "exec ln -s target $D/sym"
op link "$D/linked" created "exec ln $D/link $D/linked"
op rename "$D/moved" moved "exec mv $D/renamed $D/moved"
op unlink "$D/unlink" deleted "exec rm $D/unlink"
op rmdir "$D/gone" deleted "exec rmdir $D/gone"
# The kernel's own limit, not fimd's choice: this script may read the version, fimd does not.
case "$(uname -r)" in
5.10.* | 5.11.* | 5.12.*)
    n=0
    while [ $n -lt 100 ] && ! grep -F '"path":"/tmpw/tree"' "$T/alerts.jsonl" | grep -qF '"action":"watch_failed"'; do
        sleep 0.1
        n=$((n + 1))
    done
    if grep -F '"path":"/tmpw/tree"' "$T/alerts.jsonl" | grep -qF '"action":"watch_failed"'; then
        ok "tmpfs watch: reported as not watchable here (watch_failed), the rest still watched"
    else
        fail tmpfs "no watch_failed alert for the tmpfs watch, which fanotify cannot mark here"
    fi
    ;;
*)
    op tmpfs-write /tmpw/tree/write updated "echo rewritten > /tmpw/tree/write"
    op tmpfs-chmod /tmpw/tree/chmod attributes_modified "exec chmod 600 /tmpw/tree/chmod"
    op tmpfs-create /tmpw/tree/new created "echo new > /tmpw/tree/new"
    ;;
esac
kill $RUN
wait $RUN
rc=$?
[ $rc -eq 0 ] && ok "SIGTERM: stopped cleanly" || fail SIGTERM "exit $rc"
finish
