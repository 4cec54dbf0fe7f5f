build-merge/obj/src/store/store.o: src/store/store.c src/store/store.h \
 src/store/crypto.h src/common/alloc.h src/common/strbuf.h \
 src/common/clock.h src/common/strmap.h src/log/log.h
src/store/store.h:
src/store/crypto.h:
src/common/alloc.h:
src/common/strbuf.h:
src/common/clock.h:
src/common/strmap.h:
src/log/log.h:
