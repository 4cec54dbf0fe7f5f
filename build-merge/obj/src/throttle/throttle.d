build-merge/obj/src/throttle/throttle.o: src/throttle/throttle.c \
 src/throttle/throttle.h src/common/strmap.h src/config/config.h \
 src/common/alloc.h src/common/clock.h
src/throttle/throttle.h:
src/common/strmap.h:
src/config/config.h:
src/common/alloc.h:
src/common/clock.h:
