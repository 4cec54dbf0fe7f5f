build-merge/obj/src/trace/trace.o: src/trace/trace.c src/trace/trace.h \
 src/common/alloc.h src/common/random.h src/log/log.h
src/trace/trace.h:
src/common/alloc.h:
src/common/random.h:
src/log/log.h:
