build-merge/wsgate-loadgen: bench/loadgen.c
