build-merge/obj/src/ws/utf8.o: src/ws/utf8.c src/ws/utf8.h
src/ws/utf8.h:
