build-merge/obj/src/engine/redis_ring.o: src/engine/redis_ring.c \
 src/engine/redis_ring.h src/common/alloc.h src/common/bytebuf.h
src/engine/redis_ring.h:
src/common/alloc.h:
src/common/bytebuf.h:
