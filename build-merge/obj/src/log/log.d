build-merge/obj/src/log/log.o: src/log/log.c src/log/log.h \
 src/common/json_escape.h
src/log/log.h:
src/common/json_escape.h:
