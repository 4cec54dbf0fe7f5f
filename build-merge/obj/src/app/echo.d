build-merge/obj/src/app/echo.o: src/app/echo.c src/app/echo.h \
 src/net/server.h src/config/config.h src/http/request.h src/net/conn.h \
 src/net/tls.h src/ws/deflate.h src/ws/frame.h src/ws/utf8.h
src/app/echo.h:
src/net/server.h:
src/config/config.h:
src/http/request.h:
src/net/conn.h:
src/net/tls.h:
src/ws/deflate.h:
src/ws/frame.h:
src/ws/utf8.h:
