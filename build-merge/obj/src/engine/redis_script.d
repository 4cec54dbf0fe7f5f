build-merge/obj/src/engine/redis_script.o: src/engine/redis_script.c \
 src/engine/redis_script.h src/engine/redis_client.h \
 src/engine/redis_url.h src/common/alloc.h src/common/bytebuf.h \
 src/common/hex.h
src/engine/redis_script.h:
src/engine/redis_client.h:
src/engine/redis_url.h:
src/common/alloc.h:
src/common/bytebuf.h:
src/common/hex.h:
