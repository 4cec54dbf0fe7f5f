/* The one version string: --version, `outputs`, /metrics' build info. */
#ifndef WSGATE_COMMON_VERSION_H
#define WSGATE_COMMON_VERSION_H

#define WSGATE_VERSION "0.1.0"

#endif
