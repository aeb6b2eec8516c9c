#!/bin/busybox sh
# /init of the benchmark guest (cargo xtask bench realtime --kernel): the writer workloads of
# xtask/src/bench/realtime/workload.c with no fimd running and under `fimd run` on each sensor
# tier, in interleaved rounds. Every result is an "@@" line on the serial console, parsed by
# xtask/src/bench/realtime/guest.rs; the last is "@@ exit=N" (N failures).
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
ifconfig lo 127.0.0.1 up
# Filled in by xtask: rounds, and each workload's target duration without fimd (ns).
ROUNDS=@ROUNDS@
TARGET_NS=@TARGET_NS@
fails=0
fail() {
    echo "@@ FAIL $1: $2"
    fails=$((fails + 1))
}
finish() {
    echo "@@ exit=$fails"
    sync
    poweroff -f
}
echo "@@ kernel $(uname -r)"
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
W=$T/watched
U=$T/plain
mkdir -p "$W" "$U" "$T/tmp"
head -c 4096 /dev/zero > "$W/file"
head -c 4096 /dev/zero > "$U/file"
for i in 1 2 3 4 5 6 7 8; do echo "file $i" > "$W/other-$i"; done
WORKLOADS="unwatched watched read create"

# one WORKLOAD COUNT: runs it, prints its elapsed and CPU ns (nothing on failure: see failed).
one() {
    case $1 in
    unwatched) workload write "$U/file" "$2" ;;
    watched) workload write "$W/file" "$2" ;;
    read) workload read "$W/file" "$2" ;;
    create) workload create "$W" "$2" ;;
    esac 2> /tmp/workload.err
}
failed() {
    fail "workload $1" "$(cat /tmp/workload.err)"
}

# Each workload's count: about TARGET_NS without fimd, from a probe grown until it takes 50 ms.
for w in $WORKLOADS; do
    n=1000
    out=$(one $w $n)
    ns=${out%% *}
    while [ -n "$ns" ] && [ "$ns" -lt 50000000 ] && [ $n -lt 100000000 ]; do
        n=$((n * 4))
        out=$(one $w $n)
        ns=${out%% *}
    done
    if [ -z "$ns" ]; then
        failed $w
        finish
    fi
    n=$((n * TARGET_NS / ns))
    [ $n -lt 100 ] && n=100
    eval "COUNT_$w=$n"
    echo "@@ count $w $n"
done

# The daemon's count of kernel records (fim_kernel_events_total).
events() {
    wget -qO- http://127.0.0.1:9464/metrics 2> /dev/null | grep '^fim_kernel_events_total ' | cut -d' ' -f2
}

# start TIER: `fimd init`, then `fimd run` on TIER (fentry and kprobe: `sensor = "ebpf"` with
# FIMD_EBPF_TIER; fanotify: forced), waiting for its ready line. Fails loudly (and returns 1)
# when it exits, never gets ready, or attaches another sensor than TIER.
start() {
    rm -rf "$T/state"
    : > "$T/alerts.jsonl"
    : > "$T/run.err"
    sensor=ebpf
    expect="$1/"
    [ "$1" = fanotify ] && sensor=fanotify && expect="fanotify sensor attached"
    cat > "$T/fimd.toml" << CONF
state_dir = "$T/state"
[[watch]]
path = "$W"
[alerts]
jsonl = "$T/alerts.jsonl"
[metrics]
listen = "127.0.0.1:9464"
[realtime]
sensor = "$sensor"
CONF
    if ! fimd -c "$T/fimd.toml" init > "$T/init.out" 2>&1; then
        fail "$1/init" "$(cat "$T/init.out")"
        return 1
    fi
    if [ "$1" = fanotify ]; then
        TMPDIR="$T/tmp" fimd -c "$T/fimd.toml" run > /dev/null 2>> "$T/run.err" &
    else
        TMPDIR="$T/tmp" FIMD_EBPF_TIER=$1 fimd -c "$T/fimd.toml" run > /dev/null 2>> "$T/run.err" &
    fi
    RUN=$!
    i=0
    while [ $i -lt 600 ] && ! grep -q "; ready" "$T/run.err"; do
        if ! kill -0 $RUN 2> /dev/null; then
            fail "$1/run" "exited: $(cat "$T/run.err")"
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
    if ! grep -q "; ready" "$T/run.err"; then
        fail "$1/run" "not ready after 60 s: $(cat "$T/run.err")"
        kill $RUN
        wait $RUN
        return 1
    fi
    line=$(grep 'sensor attached' "$T/run.err")
    echo "@@ sensor $1 $line"
    if ! echo "$line" | grep -qF "$expect"; then
        fail "$1" "expected a sensor with $expect"
        kill $RUN
        wait $RUN
        return 1
    fi
}

# condition ROUND TIER: every workload under TIER ("none": no fimd running).
condition() {
    if [ "$2" != none ]; then
        start "$2" || return
        sleep 1
    fi
    for w in $WORKLOADS; do
        eval "n=\$COUNT_$w"
        [ "$2" != none ] && before=$(events)
        out=$(one $w $n)
        if [ -n "$out" ]; then
            echo "@@ time $1 $2 $w $out"
        else
            failed $w
        fi
        if [ "$2" != none ]; then
            # The records the workload caused: drained within half a second.
            sleep 0.5
            after=$(events)
            if [ -n "$before" ] && [ -n "$after" ]; then
                echo "@@ records $1 $2 $w $((after - before))"
            else
                fail "$2/metrics" "no fim_kernel_events_total on 127.0.0.1:9464"
            fi
        fi
    done
    if [ "$2" != none ]; then
        echo "@@ alerts $1 $2 $(wc -l < "$T/alerts.jsonl")"
        kill $RUN
        wait $RUN
        rc=$?
        [ $rc -eq 0 ] || fail "$2/SIGTERM" "exit $rc: $(tail -3 "$T/run.err")"
    fi
}

# Rounds alternate their order (none first, then none last) so a drift in the host's load
# weighs on every tier alike; each tier's ratio is taken against its own round's none.
TIERS="none fentry kprobe fanotify"
REVERSED="fanotify kprobe fentry none"
r=1
while [ $r -le $ROUNDS ]; do
    order=$TIERS
    [ $((r % 2)) -eq 0 ] && order=$REVERSED
    for c in $order; do
        condition $r $c
    done
    r=$((r + 1))
done
finish
