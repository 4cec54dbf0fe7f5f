build-merge/obj/src/config/config_print.o: src/config/config_print.c \
 src/config/config_table.h src/config/config.h src/common/alloc.h
src/config/config_table.h:
src/config/config.h:
src/common/alloc.h:
