# Sourced by the CPU scripts: preload tcmalloc when it is installed (apt-get install libtcmalloc-minimal4).
# Training the tiny model on 2 CPU cores with glibc's malloc spends a fifth of its time in page faults (large
# activations freed to the system and faulted back in every step): tcmalloc keeps them, 3.95 -> 4.90 steps/s with
# identical losses (README, "The tiny model on CPU"). Set CLIP4STR_MALLOC=system to keep glibc's.
if [ "${CLIP4STR_MALLOC:-tcmalloc}" = tcmalloc ]; then
    for _lib in /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/*-linux-gnu/libtcmalloc.so.4 \
        /usr/lib64/libtcmalloc_minimal.so.4; do
        if [ -f "$_lib" ]; then
            export LD_PRELOAD="$_lib${LD_PRELOAD:+:$LD_PRELOAD}"
            echo "malloc: $_lib"
            break
        fi
    done
    unset _lib
fi
