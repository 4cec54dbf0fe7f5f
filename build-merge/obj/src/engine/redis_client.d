build-merge/obj/src/engine/redis_client.o: src/engine/redis_client.c \
 src/engine/redis_client.h src/engine/redis_url.h src/common/alloc.h \
 src/common/clock.h src/common/random.h src/common/strmap.h src/log/log.h
src/engine/redis_client.h:
src/engine/redis_url.h:
src/common/alloc.h:
src/common/clock.h:
src/common/random.h:
src/common/strmap.h:
src/log/log.h:
