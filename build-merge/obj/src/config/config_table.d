build-merge/obj/src/config/config_table.o: src/config/config_table.c \
 src/config/config_table.h src/config/config.h src/engine/redis_url.h
src/config/config_table.h:
src/config/config.h:
src/engine/redis_url.h:
