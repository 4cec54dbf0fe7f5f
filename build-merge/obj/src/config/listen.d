build-merge/obj/src/config/listen.o: src/config/listen.c \
 src/config/listen.h
src/config/listen.h:
