build-merge/obj/src/engine/redis_url.o: src/engine/redis_url.c \
 src/engine/redis_url.h src/common/hex.h src/common/strbuf.h
src/engine/redis_url.h:
src/common/hex.h:
src/common/strbuf.h:
