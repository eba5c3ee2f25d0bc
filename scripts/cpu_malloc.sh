# Sourced by the CPU scripts: preload tcmalloc when it is installed (apt-get install libtcmalloc-minimal4).
# Training the tiny model on 2 CPU cores with glibc's malloc spends a fifth of its time in page faults (large
# activations freed to the system and faulted back in every step): tcmalloc keeps them, 3.95 -> 4.90 steps/s with
# identical losses (README, "The tiny model on CPU"). Set CLIP4STR_MALLOC=system to keep glibc's.
if [ "${CLIP4STR_MALLOC:-tcmalloc}" = tcmalloc ]; then
    _found=
    for _lib in /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/*-linux-gnu/libtcmalloc.so.4 \
        /usr/lib64/libtcmalloc_minimal.so.4; do
        if [ -f "$_lib" ]; then
            export LD_PRELOAD="$_lib${LD_PRELOAD:+:$LD_PRELOAD}"
            echo "malloc: $_lib"
            _found=1
            break
        fi
    done
    # Said, not fatal: a fresh machine trains 1.3-1.5x slower without it (2-core Xeon, 2026-12-07: a tiny-model
    # step of batch 64 took 0.186 s with glibc's malloc, 0.123 s with tcmalloc).
    [ -n "$_found" ] || echo 'malloc: glibc (tcmalloc not found; CPU training is up to 1.5x faster with it:' \
        'apt-get install libtcmalloc-minimal4, or CLIP4STR_MALLOC=system to silence this)' >&2
    unset _lib _found
fi
