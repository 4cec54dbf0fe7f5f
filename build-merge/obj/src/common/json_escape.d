build-merge/obj/src/common/json_escape.o: src/common/json_escape.c \
 src/common/json_escape.h src/ws/utf8.h
src/common/json_escape.h:
src/ws/utf8.h:
