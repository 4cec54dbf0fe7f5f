/* Unit tests for the configuration table (src/config/config.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "config/config.h"
#include "config/listen.h"
#include "log/log.h"

/* The seed document's "Example terraform.tfvars", verbatim. */
static const char seed_example[] = "# Core configuration\n"
                                   "aws_region   = \"us-west-2\"\n"
                                   "environment  = \"production\"\n"
                                   "project_name = \"chat-app\"\n"
                                   "\n"
                                   "# WebSocket API configuration\n"
                                   "api_name    = \"chat-websocket-api\"\n"
                                   "stage_name  = \"prod\"\n"
                                   "\n"
                                   "# DynamoDB configuration\n"
                                   "dynamodb_billing_mode = \"PAY_PER_REQUEST\"\n"
                                   "enable_dynamodb_point_in_time_recovery = true\n"
                                   "\n"
                                   "# Lambda configuration\n"
                                   "lambda_runtime = \"python3.11\"\n"
                                   "lambda_memory_size = 512\n"
                                   "lambda_message_memory_size = 1024\n"
                                   "\n"
                                   "# Security configuration\n"
                                   "enable_encryption = true\n"
                                   "enable_xray_tracing = true\n"
                                   "log_retention_days = 30\n"
                                   "\n"
                                   "# Monitoring configuration\n"
                                   "enable_detailed_metrics = true\n"
                                   "logging_level = \"INFO\"\n"
                                   "throttling_burst_limit = 1000\n"
                                   "throttling_rate_limit = 2000\n"
                                   "\n"
                                   "# Custom routes\n"
                                   "custom_routes = [\n"
                                   "  \"chat\",\n"
                                   "  \"join_room\",\n"
                                   "  \"leave_room\",\n"
                                   "  \"private_message\",\n"
                                   "  \"room_list\",\n"
                                   "  \"typing_indicator\"\n"
                                   "]\n"
                                   "\n"
                                   "# Additional tags\n"
                                   "additional_tags = {\n"
                                   "  Owner       = \"platform-team\"\n"
                                   "  CostCenter  = \"engineering\"\n"
                                   "  Application = \"chat-service\"\n"
                                   "}\n";

/* Load text from an exact-size heap copy (no NUL after it). */
static int load(config *cfg, const char *text, wsg_error *err) {
    size_t n = strlen(text);
    char *copy = xmalloc(n);
    memcpy(copy, text, n);
    int rc = config_load_text(cfg, "test.tfvars", copy, n, err);
    free(copy);
    return rc;
}

static char *dump_to_string(const config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    cr_assert_not_null(m);
    config_dump(cfg, m);
    fclose(m);
    return buf;
}

Test(config, defaults) {
    config c;
    config_init_defaults(&c);
    cr_expect_str_eq(c.aws_region, "us-east-1");
    cr_expect_str_eq(c.environment, "dev");
    cr_expect_str_eq(c.project_name, "websocket-api");
    cr_expect_str_eq(c.api_name, "websocket-api");
    cr_expect_str_eq(c.api_description, "Real-time WebSocket API for chat and messaging");
    cr_expect_str_eq(c.stage_name, "staging");
    cr_expect_str_eq(c.route_selection_expression, "$request.body.type");
    cr_assert_eq(c.custom_routes_count, 5);
    cr_expect_str_eq(c.custom_routes[0], "chat");
    cr_expect_str_eq(c.custom_routes[4], "room_list");
    cr_expect_null(c.custom_routes[5]);
    cr_expect_str_eq(c.dynamodb_billing_mode, "PROVISIONED");
    cr_expect_eq(c.dynamodb_read_capacity, 5);
    cr_expect_eq(c.dynamodb_write_capacity, 5);
    cr_expect_str_eq(c.dynamodb_table_class, "STANDARD");
    cr_expect(c.enable_dynamodb_point_in_time_recovery);
    cr_expect_str_eq(c.lambda_runtime, "python3.11");
    cr_expect_eq(c.lambda_memory_size, 256);
    cr_expect_eq(c.lambda_message_memory_size, 512);
    cr_expect_eq(c.lambda_timeout, 30);
    cr_expect_eq(c.lambda_message_timeout, 60);
    cr_expect(c.enable_detailed_metrics);
    cr_expect(c.enable_data_trace);
    cr_expect_str_eq(c.logging_level, "INFO");
    cr_expect_eq(c.throttling_burst_limit, 500);
    cr_expect_eq(c.throttling_rate_limit, 1000);
    cr_expect_eq(c.log_retention_days, 14);
    cr_expect(c.enable_xray_tracing);
    cr_expect(c.enable_encryption);
    cr_expect_eq(c.kms_key_deletion_window, 7);
    cr_expect_eq(c.additional_tags_count, 0);
    cr_expect_str_eq(c.listen, "127.0.0.1");
    cr_expect_eq(c.port, 8080);
    cr_expect_str_eq(c.data_dir, "./data");
    cr_expect_str_eq(c.mode, "api");
    cr_expect_eq(c.max_frame_size, 131072);
    cr_expect_eq(c.max_message_size, 131072);
    cr_expect_eq(c.max_header_bytes, 8192);
    cr_expect_eq(c.max_headers, 100);
    cr_expect_eq(c.handshake_timeout_ms, 10000);
    cr_expect_eq(c.idle_timeout_s, 600);
    cr_expect_eq(c.ping_interval_s, 30);
    cr_expect_eq(c.pong_timeout_s, 10);
    cr_expect_eq(c.max_connection_duration_s, 0);
    cr_expect_eq(c.max_queued_bytes, 1048576);
    cr_expect_eq(c.slow_consumer_timeout_ms, 10000);
    cr_expect_eq(c.max_pending_http_bytes, 64 * 1024 * 1024);
    cr_expect_eq(c.shutdown_timeout_ms, 5000);
    cr_expect_eq(c.max_connections, 100000);
    /* protection */
    cr_expect_eq(c.route_throttling_count, 0);
    cr_expect_null(c.route_throttling);
    cr_expect_eq(c.connection_rate_limit, 100);
    cr_expect_eq(c.connection_burst_limit, 200);
    cr_expect_eq(c.max_connections_per_ip, 1000);
    cr_expect_eq(c.connect_rate_per_ip, 50);
    cr_expect_eq(c.connect_burst_per_ip, 100);
    cr_expect_eq(c.auth_failures_per_minute, 20);
    cr_assert_eq(c.allowed_origins_count, 0);
    cr_assert_not_null(c.allowed_origins);
    cr_expect_null(c.allowed_origins[0]);
    cr_expect_str_eq(c.auth_mode, "demo");
    cr_expect_str_eq(c.jwt_algorithm, "HS256");
    cr_expect_str_eq(c.jwt_secret, "");
    cr_expect_str_eq(c.jwt_public_key_file, "");
    cr_expect_str_eq(c.jwt_issuer, "");
    cr_expect_str_eq(c.jwt_audience, "");
    cr_expect_eq(c.jwt_leeway_s, 30);
    cr_expect_str_eq(c.jwt_user_id_claim, "sub");
    cr_expect_str_eq(c.jwt_username_claim, "name");
    cr_expect_eq(c.max_fragmented_bytes, 1048576);
    cr_expect_eq(c.max_control_frames_per_s, 50);
    cr_expect_eq(c.max_json_depth, 32);
    cr_expect_str_eq(c.tls_cert_file, "");
    cr_expect_str_eq(c.tls_key_file, "");
    cr_expect_not(c.allow_demo_auth_in_production);
    cr_expect_not(c.allow_plaintext_in_production);
    cr_expect_not(c.permessage_deflate);
    cr_expect_eq(c.deflate_server_max_window_bits, 15);
    cr_expect_eq(c.deflate_client_max_window_bits, 15);
    cr_expect_eq(c.deflate_level, 6);
    cr_expect_eq(c.deflate_min_size, 64);
    cr_expect(c.deflate_client_no_context_takeover);
    wsg_error err;
    cr_expect_eq(config_validate(&c, &err), 0, "%s", err.message);
    config_free(&c);
    config_free(&c); /* idempotent */
}

Test(config, seed_example_loads) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, seed_example, &err), 0, "%s", err.message);
    /* environment = "production" with the default demo authorizer is refused
     * (production safety); the escape hatch lets it through. */
    cr_expect_lt(config_validate(&c, &err), 0);
    cr_expect_str_eq(err.message, "environment \"production\" refuses the demo authorizer (any "
                                  "token starting with valid_ is accepted); set auth_mode = "
                                  "\"jwt\" or allow_demo_auth_in_production = true");
    cr_assert_eq(config_set(&c, "allow_demo_auth_in_production=true", &err), 0, "%s", err.message);
    cr_assert_eq(config_validate(&c, &err), 0, "%s", err.message);
    cr_expect_str_eq(c.aws_region, "us-west-2");
    cr_expect_str_eq(c.environment, "production");
    cr_expect_str_eq(c.project_name, "chat-app");
    cr_expect_str_eq(c.api_name, "chat-websocket-api");
    cr_expect_str_eq(c.stage_name, "prod");
    cr_expect_str_eq(c.dynamodb_billing_mode, "PAY_PER_REQUEST");
    cr_expect(c.enable_dynamodb_point_in_time_recovery);
    cr_expect_str_eq(c.lambda_runtime, "python3.11");
    cr_expect_eq(c.lambda_memory_size, 512);
    cr_expect_eq(c.lambda_message_memory_size, 1024);
    cr_expect(c.enable_encryption);
    cr_expect(c.enable_xray_tracing);
    cr_expect_eq(c.log_retention_days, 30);
    cr_expect(c.enable_detailed_metrics);
    cr_expect_str_eq(c.logging_level, "INFO");
    cr_expect_eq(c.throttling_burst_limit, 1000);
    cr_expect_eq(c.throttling_rate_limit, 2000);
    cr_assert_eq(c.custom_routes_count, 6);
    cr_expect_str_eq(c.custom_routes[5], "typing_indicator");
    cr_expect_null(c.custom_routes[6]);
    cr_assert_eq(c.additional_tags_count, 3);
    cr_expect_str_eq(c.additional_tags[0].key, "Owner");
    cr_expect_str_eq(c.additional_tags[0].value, "platform-team");
    cr_expect_str_eq(c.additional_tags[2].key, "Application");
    cr_expect_str_eq(c.additional_tags[2].value, "chat-service");
    /* Unset variables keep their defaults. */
    cr_expect_eq(c.dynamodb_read_capacity, 5);
    cr_expect_eq(c.port, 8080);
    config_free(&c);
}

Test(config, load_file_and_missing_file) {
    char path[] = "/tmp/wsgate_cfg_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, seed_example, strlen(seed_example)), (ssize_t)strlen(seed_example));
    close(fd);
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_expect_eq(config_load_file(&c, path, &err), 0, "%s", err.message);
    cr_expect_str_eq(c.stage_name, "prod");
    unlink(path);
    cr_expect_lt(config_load_file(&c, path, &err), 0);
    char want[128];
    snprintf(want, sizeof want, "cannot read %s: No such file or directory", path);
    cr_expect_str_eq(err.message, want);
    config_free(&c);
}

Test(config, file_errors_name_file_and_line) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_expect_lt(load(&c, "port = 1\n\nfoo = 2\n", &err), 0);
    cr_expect_str_eq(err.message, "test.tfvars:3: unknown variable \"foo\"");
    cr_expect_lt(load(&c, "a = \"x\n", &err), 0);
    cr_expect_str_eq(err.message, "test.tfvars:1:5: unterminated string: a quoted string cannot "
                                  "span lines (use \\n)");
    cr_expect_lt(load(&c, "custom_routes = [\n\"a\",\n", &err), 0);
    cr_expect_str_eq(err.message, "test.tfvars:1:17: unterminated list: missing ']'");
    cr_expect_lt(load(&c, "port = 1\n/* x\n", &err), 0);
    cr_expect_str_eq(err.message, "test.tfvars:2:1: unterminated comment: missing '*/'");
    config_free(&c);
}

/* One bad value per validation rule, with the rule text the message must
 * carry. */
static const struct {
    const char *text;
    const char *name;
    const char *rule;
} bad_values[] = {
    {"aws_region = \"US_EAST\"", "aws_region", "AWS region must contain only lowercase"},
    {"environment = \"prod env\"", "environment",
     "Environment name must contain only alphanumeric characters and hyphens."},
    {"environment = \"\"", "environment", "Environment name must contain only"},
    {"project_name = \"chat_app\"", "project_name",
     "Project name must contain only alphanumeric characters and hyphens."},
    {"api_name = \"\"", "api_name", "API name must be between 1 and 128 characters."},
    {"stage_name = \"a/b\"", "stage_name", "Stage name must contain only"},
    {"route_selection_expression = \"$request.header.x\"", "route_selection_expression",
     "Route selection expression must be of the form $request.body.PATH."},
    {"route_selection_expression = \"$request.body.\"", "route_selection_expression",
     "of the form $request.body.PATH"},
    {"route_selection_expression = \"$request.body.a..b\"", "route_selection_expression",
     "of the form $request.body.PATH"},
    {"custom_routes = [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\"]",
     "custom_routes", "Maximum of 10 custom routes allowed."},
    {"custom_routes = [\"chat\", \"\"]", "custom_routes", "non-empty string"},
    {"custom_routes = [\"chat\", 5]", "custom_routes", "must be a list of strings"},
    {"custom_routes = \"chat\"", "custom_routes", "must be a list of strings"},
    {"dynamodb_billing_mode = \"ON_DEMAND\"", "dynamodb_billing_mode",
     "DynamoDB billing mode must be either PROVISIONED or PAY_PER_REQUEST."},
    {"dynamodb_read_capacity = 0", "dynamodb_read_capacity",
     "DynamoDB read capacity must be between 1 and 40000."},
    {"dynamodb_write_capacity = 40001", "dynamodb_write_capacity",
     "DynamoDB write capacity must be between 1 and 40000."},
    {"dynamodb_table_class = \"GLACIER\"", "dynamodb_table_class",
     "DynamoDB table class must be either STANDARD or STANDARD_INFREQUENT_ACCESS."},
    {"enable_dynamodb_point_in_time_recovery = 1", "enable_dynamodb_point_in_time_recovery",
     "must be true or false"},
    {"lambda_runtime = \"python3.12\"", "lambda_runtime",
     "Lambda runtime must be a supported Python version (python3.8 through python3.11)."},
    {"lambda_runtime = \"nodejs18.x\"", "lambda_runtime", "supported Python version"},
    {"lambda_memory_size = 127", "lambda_memory_size",
     "Lambda memory size must be between 128 and 10240 MB."},
    {"lambda_message_memory_size = 10241", "lambda_message_memory_size",
     "Lambda message memory size must be between 128 and 10240 MB."},
    {"lambda_timeout = 0", "lambda_timeout", "Lambda timeout must be between 1 and 900 seconds."},
    {"lambda_message_timeout = 901", "lambda_message_timeout",
     "Lambda message timeout must be between 1 and 900 seconds."},
    {"enable_detailed_metrics = \"yes\"", "enable_detailed_metrics", "must be true or false"},
    {"enable_data_trace = null_", "enable_data_trace", "variables and function calls"},
    {"logging_level = \"DEBUG\"", "logging_level",
     "Logging level must be one of: OFF, ERROR, INFO."},
    {"logging_level = \"info\"", "logging_level", "Logging level must be one of"},
    {"throttling_burst_limit = 5001", "throttling_burst_limit",
     "Throttling burst limit must be between 0 and 5000."},
    {"throttling_burst_limit = -1", "throttling_burst_limit",
     "Throttling burst limit must be between 0 and 5000."},
    {"throttling_rate_limit = 10001", "throttling_rate_limit",
     "Throttling rate limit must be between 0 and 10000."},
    {"log_retention_days = 15", "log_retention_days",
     "Log retention days must be one of the valid CloudWatch retention periods."},
    {"enable_xray_tracing = []", "enable_xray_tracing", "must be true or false"},
    {"enable_encryption = 0", "enable_encryption", "must be true or false"},
    {"kms_key_deletion_window = 6", "kms_key_deletion_window",
     "KMS key deletion window must be between 7 and 30 days."},
    {"kms_key_deletion_window = 31", "kms_key_deletion_window", "between 7 and 30 days"},
    {"additional_tags = { a = 1 }", "additional_tags", "must be a map of strings"},
    {"additional_tags = [\"a\"]", "additional_tags", "must be a map of strings"},
    {"additional_tags = { \"\" = \"x\" }", "additional_tags", "Tag keys must be 1 to 128"},
    {"listen = \"0.0.0.0 \"", "listen", "Listen address must be"},
    {"listen = \"\"", "listen", "Listen address must be"},
    {"port = 65536", "port", "Port must be between 0 and 65535."},
    {"port = -1", "port", "Port must be between 0 and 65535."},
    {"port = 80.5", "port", "must be a whole number"},
    {"port = \"eighty\"", "port", "must be a whole number"},
    {"data_dir = \"\"", "data_dir", "Data directory must be a non-empty path."},
    {"mode = \"proxy\"", "mode", "Mode must be either api or echo."},
    {"max_frame_size = 0", "max_frame_size", "Maximum frame size must be between 1 and 67108864"},
    {"max_frame_size = 67108865", "max_frame_size", "between 1 and 67108864"},
    {"max_message_size = 67108865", "max_message_size",
     "Maximum message size must be between 1 and 67108864"},
    {"max_header_bytes = 1023", "max_header_bytes", "Maximum header bytes must be between"},
    {"max_headers = 7", "max_headers", "Maximum headers must be between 8 and 10000."},
    {"handshake_timeout_ms = -1", "handshake_timeout_ms", "Handshake timeout must be between"},
    {"idle_timeout_s = 86401", "idle_timeout_s", "Idle timeout must be between 0 and 86400"},
    {"ping_interval_s = -5", "ping_interval_s", "Ping interval must be between"},
    {"pong_timeout_s = 3601", "pong_timeout_s", "Pong timeout must be between"},
    {"max_connection_duration_s = -1", "max_connection_duration_s",
     "Maximum connection duration must be between"},
    {"max_queued_bytes = 0", "max_queued_bytes", "Maximum queued bytes must be between"},
    {"slow_consumer_timeout_ms = 0", "slow_consumer_timeout_ms",
     "Slow consumer timeout must be between"},
    {"max_pending_http_bytes = 1024", "max_pending_http_bytes",
     "Maximum pending HTTP bytes must be between"},
    {"shutdown_timeout_ms = 600001", "shutdown_timeout_ms", "Shutdown timeout must be between"},
    {"max_connections = 0", "max_connections", "Maximum connections must be between"},
    {"stage_name = 5", "stage_name", "must be a string"},
    {"aws_region = true", "aws_region", "must be a string"},
    {"api_description = [\"x\"]", "api_description", "must be a string"},
    /* protection */
    {"route_throttling = [\"chat\"]", "route_throttling",
     "must be a map of objects with burst_limit, rate_limit"},
    {"route_throttling = { chat = 5 }", "route_throttling",
     "route \"chat\": must be an object with burst_limit, rate_limit"},
    {"route_throttling = { chat = { burst_limit = 5001, rate_limit = 1 } }", "route_throttling",
     "route \"chat\": Route burst limit must be between 0 and 5000."},
    {"route_throttling = { chat = { burst_limit = 1, rate_limit = -1 } }", "route_throttling",
     "route \"chat\": Route rate limit must be between 0 and 10000."},
    {"route_throttling = { chat = { burst_limit = 1, rate_limit = 10001 } }", "route_throttling",
     "Route rate limit must be between 0 and 10000."},
    {"route_throttling = { chat = { burts_limit = 1, rate_limit = 1 } }", "route_throttling",
     "route \"chat\": unknown member \"burts_limit\" (expected burst_limit, rate_limit)"},
    {"route_throttling = { chat = { burst_limit = 1 } }", "route_throttling",
     "route \"chat\": missing member \"rate_limit\""},
    {"route_throttling = { chat = { burst_limit = 1.5, rate_limit = 1 } }", "route_throttling",
     "route \"chat\": member \"burst_limit\" must be a whole number"},
    {"route_throttling = { chat = { burst_limit = \"x\", rate_limit = 1 } }", "route_throttling",
     "member \"burst_limit\" must be a whole number"},
    {"route_throttling = { \"\" = { burst_limit = 1, rate_limit = 1 } }", "route_throttling",
     "Route names must be 1 to 128 characters."},
    {"route_throttling = \"chat\"", "route_throttling", "must be a map of objects"},
    {"allowed_origins = [\"https://a.example\", \"\"]", "allowed_origins",
     "Each allowed origin must be a non-empty string of at most 1024 characters."},
    {"allowed_origins = \"https://a.example\"", "allowed_origins", "must be a list of strings"},
    {"connection_rate_limit = 1000001", "connection_rate_limit",
     "Connection rate limit must be between 0 and 1000000."},
    {"connection_burst_limit = -1", "connection_burst_limit",
     "Connection burst limit must be between 0 and 1000000."},
    {"max_connections_per_ip = 10000001", "max_connections_per_ip",
     "Maximum connections per IP must be between 0 and 10000000."},
    {"connect_rate_per_ip = -1", "connect_rate_per_ip",
     "Connect rate per IP must be between 0 and 1000000."},
    {"connect_burst_per_ip = 1000001", "connect_burst_per_ip",
     "Connect burst per IP must be between 0 and 1000000."},
    {"auth_failures_per_minute = 100001", "auth_failures_per_minute",
     "Auth failures per minute must be between 0 and 100000."},
    {"auth_mode = \"none\"", "auth_mode", "Auth mode must be one of: demo, jwt, http."},
    {"auth_mode = \"JWT\"", "auth_mode", "Auth mode must be one of: demo, jwt, http."},
    {"route_integrations = { chat = \"ftp://h/x\" }", "route_integrations",
     "Each route integration must map a route key to an http:// or https:// URL"},
    {"route_integrations = { chat = \"http://\" }", "route_integrations",
     "Each route integration must map a route key to an http:// or https:// URL"},
    {"route_integrations = { chat = 1 }", "route_integrations", "must be a map of strings"},
    {"route_responses = [\"\"]", "route_responses", "Each route response must be a non-empty"},
    {"authorizer_url = \"localhost:9000\"", "authorizer_url",
     "authorizer_url must be an http:// or https:// URL with a host."},
    {"authorizer_identity_sources = [\"header.x\"]", "authorizer_identity_sources",
     "Each identity source must be route.request.header.NAME"},
    {"authorizer_cache_ttl_s = 3601", "authorizer_cache_ttl_s",
     "authorizer_cache_ttl_s must be between 0 and 3600."},
    {"integration_max_concurrency = 0", "integration_max_concurrency",
     "integration_max_concurrency must be between 1 and 100000."},
    {"integration_domain_name = \"a/b\"", "integration_domain_name",
     "integration_domain_name must be a host name or address"},
    {"jwt_algorithm = \"none\"", "jwt_algorithm",
     "JWT algorithm must be one of: HS256, RS256, ES256."},
    {"jwt_algorithm = \"hs256\"", "jwt_algorithm", "JWT algorithm must be one of"},
    {"jwt_leeway_s = 301", "jwt_leeway_s", "JWT leeway must be between 0 and 300 seconds."},
    {"jwt_leeway_s = -1", "jwt_leeway_s", "JWT leeway must be between 0 and 300 seconds."},
    {"jwt_user_id_claim = \"\"", "jwt_user_id_claim",
     "JWT user id claim must be between 1 and 128 characters."},
    {"jwt_username_claim = \"\"", "jwt_username_claim",
     "JWT username claim must be between 1 and 128 characters."},
    {"jwt_secret = 5", "jwt_secret", "must be a string"},
    {"max_fragmented_bytes = 0", "max_fragmented_bytes",
     "Maximum fragmented bytes must be between 1 and 67108864."},
    {"max_fragmented_bytes = 67108865", "max_fragmented_bytes", "between 1 and 67108864"},
    {"max_control_frames_per_s = 100001", "max_control_frames_per_s",
     "Maximum control frames per second must be between 0 and 100000."},
    {"max_json_depth = 0", "max_json_depth", "Maximum JSON depth must be between 1 and 1000."},
    {"max_json_depth = 1001", "max_json_depth", "Maximum JSON depth must be between 1 and 1000."},
    {"tls_cert_file = 1", "tls_cert_file", "must be a string"},
    {"allow_demo_auth_in_production = \"yes\"", "allow_demo_auth_in_production",
     "must be true or false"},
    {"allow_plaintext_in_production = 1", "allow_plaintext_in_production", "must be true or false"},
    {"permessage_deflate = \"on\"", "permessage_deflate", "must be true or false"},
    {"deflate_server_max_window_bits = 7", "deflate_server_max_window_bits",
     "deflate_server_max_window_bits must be between 8 and 15."},
    {"deflate_server_max_window_bits = 16", "deflate_server_max_window_bits", "between 8 and 15"},
    {"deflate_client_max_window_bits = 7", "deflate_client_max_window_bits",
     "deflate_client_max_window_bits must be between 8 and 15."},
    {"deflate_client_max_window_bits = 16", "deflate_client_max_window_bits", "between 8 and 15"},
    {"deflate_level = 0", "deflate_level", "deflate_level must be between 1 and 9."},
    {"deflate_level = 10", "deflate_level", "deflate_level must be between 1 and 9."},
    {"deflate_min_size = -1", "deflate_min_size",
     "deflate_min_size must be between 0 and 67108864."},
    {"deflate_client_no_context_takeover = 0", "deflate_client_no_context_takeover",
     "must be true or false"},
};

Test(config, every_rule_rejects_with_file_line_name) {
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        config c;
        wsg_error err;
        config_init_defaults(&c);
        char text[512];
        /* The bad value sits on line 3, after a comment and a good line. */
        bool is_port = strcmp(bad_values[i].name, "port") == 0;
        snprintf(text, sizeof text, "# header\n%s\n%s\n",
                 is_port ? "lambda_timeout = 31" : "port = 9000", bad_values[i].text);
        cr_expect_lt(load(&c, text, &err), 0, "accepted: %s", bad_values[i].text);
        char prefix[160];
        snprintf(prefix, sizeof prefix, "test.tfvars:3: variable \"%s\": ", bad_values[i].name);
        bool syntax = strstr(bad_values[i].rule, "variables and function calls") != NULL;
        if (syntax) /* reported by position, and nothing of the file applies */
            snprintf(prefix, sizeof prefix, "test.tfvars:3:");
        cr_expect(strncmp(err.message, prefix, strlen(prefix)) == 0, "\"%s\" lacks prefix \"%s\"",
                  err.message, prefix);
        cr_expect(strstr(err.message, bad_values[i].rule) != NULL, "\"%s\" lacks \"%s\"",
                  err.message, bad_values[i].rule);
        /* The earlier line applied; the bad value did not. */
        if (is_port) cr_expect_eq(c.lambda_timeout, 31);
        else if (!syntax) cr_expect_eq(c.port, 9000);
        cr_expect_eq(config_validate(&c, &err), 0, "%s", err.message);
        config_free(&c);
    }
}

Test(config, good_edge_values) {
    static const char *good[] = {
        "port = 0",
        "port = 65535",
        "throttling_burst_limit = 0",
        "throttling_rate_limit = 10000",
        "log_retention_days = 3653",
        "log_retention_days = 1",
        "lambda_runtime = \"python3.8\"",
        "route_selection_expression = \"$request.body.action\"",
        "route_selection_expression = \"$request.body.meta.kind\"",
        "custom_routes = []",
        "custom_routes = [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\"]",
        "max_frame_size = 67108864",
        "logging_level = \"OFF\"",
        "mode = \"echo\"",
        "listen = \"::\"",
        "listen = \"localhost\"",
        "lambda_timeout = \"45\"", /* Terraform converts numeric strings */
        "enable_encryption = \"false\"",
        "port = 8.1e3",
        "environment = \"Prod-2\"",
        "additional_tags = { \"team name\" = \"\" }",
        "route_throttling = {}",
        "route_throttling = { chat = { burst_limit = 0, rate_limit = 0 } }",
        "route_throttling = { chat = { burst_limit = 5000, rate_limit = 10000 } }",
        "route_throttling = { \"$default\" = { burst_limit = \"3\", rate_limit = 1e3 } }",
        "allowed_origins = []",
        "allowed_origins = [\"https://chat.example.com\", \"http://localhost:3000\"]",
        "connection_rate_limit = 0",
        "connection_burst_limit = 1000000",
        "max_connections_per_ip = 10000000",
        "auth_failures_per_minute = 0",
        "jwt_leeway_s = 300",
        "max_fragmented_bytes = 67108864",
        "max_control_frames_per_s = 0",
        "max_json_depth = 1000",
        "permessage_deflate = true",
        "deflate_server_max_window_bits = 8",
        "deflate_client_max_window_bits = 8",
        "deflate_level = 9",
        "deflate_min_size = 0",
        "deflate_client_no_context_takeover = false",
        "auth_mode = \"jwt\"\njwt_secret = \"s3cret\"",
        "auth_mode = \"jwt\"\njwt_algorithm = \"ES256\"\njwt_public_key_file = \"/k.pem\"",
        "tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"",
        "environment = \"production\"\nallow_demo_auth_in_production = true",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        config c;
        wsg_error err;
        config_init_defaults(&c);
        cr_expect_eq(load(&c, good[i], &err), 0, "%s: %s", good[i], err.message);
        cr_expect_eq(config_validate(&c, &err), 0, "%s: %s", good[i], err.message);
        config_free(&c);
    }
}

Test(config, null_restores_default) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, "stage_name = \"x\"\nport = 1\n", &err), 0);
    cr_assert_eq(config_set(&c, "stage_name=null", &err), 0); /* a string: taken verbatim */
    cr_expect_str_eq(c.stage_name, "null");
    cr_assert_eq(load(&c, "stage_name = null\nport = null\ncustom_routes = null\n", &err), 0, "%s",
                 err.message);
    cr_expect_str_eq(c.stage_name, "staging");
    cr_expect_eq(c.port, 8080);
    cr_expect_eq(c.custom_routes_count, 5);
    config_free(&c);
}

Test(config, env_and_set) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    char *env[] = {
        "PATH=/usr/bin",
        "TF_VAR_stage_name=prod",
        "TF_VAR_port=\"5\"",
        "TF_VAR_custom_routes=[\"a\", \"b\"]",
        "TF_VAR_enable_encryption=false",
        "TF_VAR_enable_xray_tracing=\"false\"",
        "TF_VAR_additional_tags={ team = \"x\" }",
        "TF_VAR_api_name=\"quoted\"",
        "TF_VAR_api_description=2024",
        "TF_VAR_unknown_thing=1",
        "TF_VAR_noequals",
        NULL,
    };
    cr_assert_eq(config_load_env(&c, env, &err), 0, "%s", err.message);
    cr_expect_str_eq(c.stage_name, "prod");
    cr_expect_eq(c.port, 5);
    cr_assert_eq(c.custom_routes_count, 2);
    cr_expect_str_eq(c.custom_routes[1], "b");
    cr_expect_not(c.enable_encryption);
    cr_expect_not(c.enable_xray_tracing);
    cr_assert_eq(c.additional_tags_count, 1);
    cr_expect_str_eq(c.additional_tags[0].value, "x");
    cr_expect_str_eq(c.api_name, "quoted");
    cr_expect_str_eq(c.api_description, "2024");

    cr_assert_eq(config_set(&c, "stage_name=v2", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "custom_routes=[\"a\",\"b\",\"c\"]", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "port=9000", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "max_frame_size=1e3", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "api_description=a = b", &err), 0, "%s", err.message);
    cr_expect_str_eq(c.stage_name, "v2");
    cr_expect_eq(c.custom_routes_count, 3);
    cr_expect_eq(c.port, 9000);
    cr_expect_eq(c.max_frame_size, 1000);
    cr_expect_str_eq(c.api_description, "a = b");

    cr_expect_lt(config_set(&c, "port=abc", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"port\": must be a whole number");
    cr_expect_lt(config_set(&c, "port=70000", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"port\": Port must be between 0 and 65535.");
    cr_expect_lt(config_set(&c, "custom_routes=chat", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"custom_routes\": must be a list of strings");
    cr_expect_lt(config_set(&c, "nope=1", &err), 0);
    cr_expect_str_eq(err.message, "--set: unknown variable \"nope\"");
    /* a duration or a size written with its unit: the unit is in the name */
    cr_expect_lt(config_set(&c, "idle_timeout_s=10m", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"idle_timeout_s\": must be a whole number of "
                                  "seconds (no unit suffix)");
    cr_expect_lt(config_set(&c, "handshake_timeout_ms=5s", &err), 0);
    cr_expect_str_eq(err.message,
                     "--set: variable \"handshake_timeout_ms\": must be a whole number "
                     "of milliseconds (no unit suffix)");
    cr_expect_lt(config_set(&c, "max_queued_bytes=64KiB", &err), 0);
    cr_expect(strstr(err.message, "of bytes (no unit suffix such as KiB)") != NULL, "%s",
              err.message);
    cr_expect_lt(config_set(&c, "port", &err), 0);
    cr_expect(strstr(err.message, "expected name=value") != NULL, "%s", err.message);
    cr_expect_lt(config_set(&c, "enable_encryption=maybe", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"enable_encryption\": must be true or false");
    cr_expect_lt(config_set(&c, "stage_name=\"unterminated", &err), 0);
    cr_expect(strstr(err.message, "Stage name must contain only") != NULL, "%s", err.message);
    cr_expect_lt(config_set_var(&c, "-p", "port", "x", &err), 0);
    cr_expect_str_eq(err.message, "-p: variable \"port\": must be a whole number");
    cr_expect_eq(c.port, 9000); /* failures leave the old value */

    char *bad_env[] = {"TF_VAR_log_retention_days=2", NULL};
    cr_expect_lt(config_load_env(&c, bad_env, &err), 0);
    cr_expect_str_eq(err.message, "TF_VAR_log_retention_days: variable \"log_retention_days\": "
                                  "Log retention days must be one of the valid CloudWatch "
                                  "retention periods. They are 1, 3, 5, 7, 14, 30, 60, 90, 120, "
                                  "150, 180, 365, 400, 545, 731, 1827 and 3653.");
    config_free(&c);
}

Test(config, precedence_file_env_set) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, "stage_name = \"file\"\nport = 1000\napi_name = \"f\"\n", &err), 0);
    char *env[] = {"TF_VAR_stage_name=env", "TF_VAR_port=2000", NULL};
    cr_assert_eq(config_load_env(&c, env, &err), 0);
    cr_assert_eq(config_set(&c, "port=3000", &err), 0);
    cr_expect_str_eq(c.api_name, "f");     /* file only */
    cr_expect_str_eq(c.stage_name, "env"); /* env beats file */
    cr_expect_eq(c.port, 3000);            /* --set beats env */
    config_free(&c);
}

Test(config, dump_round_trip) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, seed_example, &err), 0, "%s", err.message);
    cr_assert_eq(
        config_set(&c, "api_description=\"q\\\" b\\\\ $${x} %%{y} \\n\\t\\u0001 \\u00e9\"", &err),
        0, "%s", err.message);
    cr_assert_eq(config_set(&c, "additional_tags={\"a b\" = \"c\\\"d\", e = \"\"}", &err), 0, "%s",
                 err.message);
    char *text = dump_to_string(&c);
    cr_expect(strstr(text, "stage_name") != NULL);
    cr_expect(strstr(text, "custom_routes                          = [\"chat\", ") != NULL, "%s",
              text);
    config d;
    config_init_defaults(&d);
    cr_assert_eq(config_load_text(&d, "dump", text, strlen(text), &err), 0, "%s\n%s", err.message,
                 text);
    cr_expect_str_eq(d.api_description, c.api_description);
    cr_expect_str_eq(d.api_description, "q\" b\\ ${x} %{y} \n\t\x01 \xc3\xa9");
    cr_expect_eq(d.additional_tags_count, 2);
    cr_expect_str_eq(d.additional_tags[0].key, "a b");
    cr_expect_str_eq(d.additional_tags[0].value, "c\"d");
    char *again = dump_to_string(&d);
    cr_expect_str_eq(again, text);
    free(again);
    free(text);
    config_free(&d);
    config_free(&c);

    /* Defaults round-trip too (empty map, default list). */
    config_init_defaults(&c);
    text = dump_to_string(&c);
    cr_expect(strstr(text, "additional_tags                        = {}\n") != NULL, "%s", text);
    config_init_defaults(&d);
    cr_assert_eq(config_load_text(&d, "dump", text, strlen(text), &err), 0, "%s", err.message);
    again = dump_to_string(&d);
    cr_expect_str_eq(again, text);
    free(again);
    free(text);
    config_free(&d);
    config_free(&c);
}

Test(config, help_lists_every_variable) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    config_print_help(m);
    fclose(m);
    static const char *names[] = {"aws_region", "additional_tags", "kms_key_deletion_window",
                                  "max_connections", "route_selection_expression"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_expect(strstr(buf, names[i]) != NULL, "%s missing", names[i]);
    cr_expect(strstr(buf, "list(string)") != NULL);
    cr_expect(strstr(buf, "\"us-east-1\"") != NULL);
    cr_expect(strncmp(buf, "VARIABLE", 8) == 0);
    free(buf);
}

Test(config, no_effect_notes) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, seed_example, &err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    config_print_no_effect(&c, m);
    fclose(m);
    cr_expect(strstr(buf, "\"dynamodb_billing_mode\"") != NULL, "%s", buf);
    cr_expect(strstr(buf, "\"lambda_memory_size\"") != NULL, "%s", buf);
    cr_expect(strstr(buf, "\"lambda_runtime\"") == NULL, "%s", buf); /* default value */
    cr_expect(strstr(buf, "\"stage_name\"") == NULL, "%s", buf);
    free(buf);
    config_free(&c);
}

Test(config, validate_catches_direct_assignment) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    c.port = 70000;
    cr_expect_lt(config_validate(&c, &err), 0);
    cr_expect_str_eq(err.message, "variable \"port\": Port must be between 0 and 65535.");
    config_free(&c);
}

Test(config, not_nul_terminated) {
    /* "port = 12" cut after "port = 1": must read only 8 bytes. */
    char *buf = xmalloc(8);
    memcpy(buf, "port = 12", 8);
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_expect_eq(config_load_text(&c, "x", buf, 8, &err), 0, "%s", err.message);
    cr_expect_eq(c.port, 1);
    free(buf);
    config_free(&c);
}

/* ---------- protection: route_throttling ---------- */

static const char route_throttling_text[] =
    "route_throttling = { chat = { burst_limit = 10, rate_limit = 5 }, "
    "join_room = { burst_limit = 2, rate_limit = 1 } }";

static void expect_two_routes(const config *c) {
    cr_assert_eq(c->route_throttling_count, 2);
    cr_expect_str_eq(c->route_throttling[0].route, "chat");
    cr_expect_eq(c->route_throttling[0].burst_limit, 10);
    cr_expect_eq(c->route_throttling[0].rate_limit, 5);
    cr_expect_str_eq(c->route_throttling[1].route, "join_room");
    cr_expect_eq(c->route_throttling[1].burst_limit, 2);
    cr_expect_eq(c->route_throttling[1].rate_limit, 1);
}

Test(config, route_throttling_parses) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, route_throttling_text, &err), 0, "%s", err.message);
    expect_two_routes(&c);
    cr_expect_eq(config_validate(&c, &err), 0, "%s", err.message);
    /* Multi-line form, quoted keys, colon separators, numeric strings. */
    cr_assert_eq(load(&c,
                      "route_throttling = {\n"
                      "  \"private_message\" = {\n"
                      "    burst_limit = \"7\"\n"
                      "    rate_limit  = 3\n"
                      "  },\n"
                      "  room_list: { rate_limit = 0, burst_limit = 0 },\n"
                      "}\n",
                      &err),
                 0, "%s", err.message);
    cr_assert_eq(c.route_throttling_count, 2); /* a new value replaces the old one */
    cr_expect_str_eq(c.route_throttling[0].route, "private_message");
    cr_expect_eq(c.route_throttling[0].burst_limit, 7);
    cr_expect_eq(c.route_throttling[0].rate_limit, 3);
    cr_expect_str_eq(c.route_throttling[1].route, "room_list");
    cr_expect_eq(c.route_throttling[1].rate_limit, 0);
    /* null and {} both mean none. */
    cr_assert_eq(load(&c, "route_throttling = null", &err), 0, "%s", err.message);
    cr_expect_eq(c.route_throttling_count, 0);
    cr_expect_null(c.route_throttling);
    cr_assert_eq(load(&c, route_throttling_text, &err), 0, "%s", err.message);
    cr_assert_eq(load(&c, "route_throttling = {}", &err), 0, "%s", err.message);
    cr_expect_eq(c.route_throttling_count, 0);
    config_free(&c);
    cr_expect_null(c.route_throttling);
}

Test(config, route_throttling_errors) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, route_throttling_text, &err), 0, "%s", err.message);
    /* The line of the offending member, not of the variable. */
    cr_expect_lt(load(&c,
                      "route_throttling = {\n"
                      "  chat = {\n"
                      "    burts_limit = 10\n"
                      "    rate_limit  = 5\n"
                      "  }\n"
                      "}\n",
                      &err),
                 0);
    cr_expect_str_eq(err.message,
                     "test.tfvars:3: variable \"route_throttling\": route \"chat\": "
                     "unknown member \"burts_limit\" (expected burst_limit, rate_limit)");
    cr_expect_lt(load(&c, "route_throttling = {\n  chat = {\n    burst_limit = 10\n  }\n}\n", &err),
                 0);
    cr_expect_str_eq(err.message,
                     "test.tfvars:2: variable \"route_throttling\": route \"chat\": "
                     "missing member \"rate_limit\" (expected burst_limit, rate_limit)");
    cr_expect_lt(load(&c,
                      "route_throttling = {\n a = { burst_limit = 1, rate_limit = 1 }\n"
                      " b = { burst_limit = 1,\n rate_limit = 20000 }\n}\n",
                      &err),
                 0);
    cr_expect_str_eq(err.message, "test.tfvars:4: variable \"route_throttling\": route \"b\": "
                                  "Route rate limit must be between 0 and 10000.");
    /* Names in messages stay on one line and short. */
    cr_expect_lt(load(&c,
                      "route_throttling = { \"a\\nb\" = { burst_limit = 1, rate_limit = 1, "
                      "\"x\\ty\" = 2 } }",
                      &err),
                 0);
    cr_expect(strstr(err.message, "route \"a?b\": unknown member \"x?y\"") != NULL, "%s",
              err.message);
    cr_expect(strchr(err.message, '\n') == NULL);
    /* At most 20 routes, names at most 128 characters. */
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text, "route_throttling = {\n");
    for (int i = 0; i < 21; i++)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "  r%d = { burst_limit = 1, rate_limit = 1 }\n", i);
    snprintf(text + n, sizeof text - n, "}\n");
    cr_expect_lt(load(&c, text, &err), 0);
    cr_expect_str_eq(err.message, "test.tfvars:1: variable \"route_throttling\": At most 20 routes "
                                  "may have their own throttling.");
    char *p = strstr(text, "  r20 =");
    strcpy(p, "}\n");
    cr_expect_eq(load(&c, text, &err), 0, "%s", err.message);
    cr_expect_eq(c.route_throttling_count, 20);
    char name[130];
    memset(name, 'x', 129);
    name[129] = '\0';
    snprintf(text, sizeof text, "route_throttling = { %s = { burst_limit = 1, rate_limit = 1 } }",
             name);
    cr_expect_lt(load(&c, text, &err), 0);
    cr_expect_str_eq(err.message, "test.tfvars:1: variable \"route_throttling\": Route names must "
                                  "be 1 to 128 characters.");
    name[128] = '\0';
    snprintf(text, sizeof text, "route_throttling = { %s = { burst_limit = 1, rate_limit = 1 } }",
             name);
    cr_expect_eq(load(&c, text, &err), 0, "%s", err.message);
    cr_expect_eq(c.route_throttling_count, 1);
    config_free(&c);
}

Test(config, route_throttling_env_and_set) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    char *env[] = {"TF_VAR_route_throttling={ chat = { burst_limit = 10, rate_limit = 5 }, "
                   "join_room = { burst_limit = 2, rate_limit = 1 } }",
                   NULL};
    cr_assert_eq(config_load_env(&c, env, &err), 0, "%s", err.message);
    expect_two_routes(&c);
    cr_assert_eq(
        config_set(&c, "route_throttling={ typing = { burst_limit = 1, rate_limit = 2 } }", &err),
        0, "%s", err.message);
    cr_assert_eq(c.route_throttling_count, 1);
    cr_expect_str_eq(c.route_throttling[0].route, "typing");
    cr_expect_eq(c.route_throttling[0].rate_limit, 2);
    cr_expect_lt(
        config_set(&c, "route_throttling={ chat = { burts_limit = 1, rate_limit = 2 } }", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"route_throttling\": route \"chat\": unknown "
                                  "member \"burts_limit\" (expected burst_limit, rate_limit)");
    cr_expect_lt(config_set(&c, "route_throttling=chat", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"route_throttling\": must be a map of objects "
                                  "with burst_limit, rate_limit");
    char *bad_env[] = {
        "TF_VAR_route_throttling={ chat = {\n burst_limit = 6000,\n rate_limit = 1 } }", NULL};
    cr_expect_lt(config_load_env(&c, bad_env, &err), 0);
    cr_expect_str_eq(err.message, "TF_VAR_route_throttling: variable \"route_throttling\": route "
                                  "\"chat\": Route burst limit must be between 0 and 5000.");
    cr_expect_str_eq(c.route_throttling[0].route, "typing"); /* failures leave the old value */
    cr_assert_eq(config_set(&c, "route_throttling=null", &err), 0, "%s", err.message);
    cr_expect_eq(c.route_throttling_count, 0);
    config_free(&c);
}

Test(config, route_throttling_dump_round_trip) {
    config c, d;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, route_throttling_text, &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "allowed_origins=[\"https://a.example\", \"http://b:8080\"]", &err),
                 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "jwt_secret=hunter2", &err), 0, "%s", err.message);
    char *text = dump_to_string(&c);
    cr_expect(strstr(text,
                     "\nroute_throttling                       = { \"chat\" = { burst_limit = "
                     "10, rate_limit = 5 }, \"join_room\" = { burst_limit = 2, rate_limit = "
                     "1 } }\n") != NULL,
              "%s", text);
    cr_expect(strstr(text, "\nallowed_origins                        = [\"https://a.example\", "
                           "\"http://b:8080\"]\n") != NULL,
              "%s", text);
    cr_expect(strstr(text, "hunter2") == NULL, "%s", text); /* the secret is masked */
    cr_expect(strstr(text, "\njwt_secret                             = \"********\"\n") != NULL,
              "%s", text);
    config_init_defaults(&d);
    cr_assert_eq(config_load_text(&d, "dump", text, strlen(text), &err), 0, "%s\n%s", err.message,
                 text);
    expect_two_routes(&d);
    cr_assert_eq(d.allowed_origins_count, 2);
    cr_expect_str_eq(d.allowed_origins[1], "http://b:8080");
    char *again = dump_to_string(&d);
    cr_expect_str_eq(again, text);
    free(again);
    free(text);
    config_free(&d);
    config_free(&c);

    /* The default (empty) round-trips as {}. */
    config_init_defaults(&c);
    text = dump_to_string(&c);
    cr_expect(strstr(text, "\nroute_throttling                       = {}\n") != NULL, "%s", text);
    cr_expect(strstr(text, "\nallowed_origins                        = []\n") != NULL, "%s", text);
    config_init_defaults(&d);
    cr_assert_eq(config_load_text(&d, "dump", text, strlen(text), &err), 0, "%s", err.message);
    cr_expect_eq(d.route_throttling_count, 0);
    free(text);
    config_free(&d);
    config_free(&c);
}

Test(config, route_throttling_validate_direct_assignment) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c, route_throttling_text, &err), 0, "%s", err.message);
    c.route_throttling[1].burst_limit = 5001;
    cr_expect_lt(config_validate(&c, &err), 0);
    cr_expect_str_eq(err.message, "variable \"route_throttling\": route \"join_room\": Route burst "
                                  "limit must be between 0 and 5000.");
    c.route_throttling[1].burst_limit = 5000;
    c.route_throttling[0].rate_limit = -1;
    cr_expect_lt(config_validate(&c, &err), 0);
    cr_expect(strstr(err.message, "route \"chat\": Route rate limit") != NULL, "%s", err.message);
    c.route_throttling[0].rate_limit = 0;
    cr_expect_eq(config_validate(&c, &err), 0, "%s", err.message);
    config_free(&c);
}

/* ---------- protection: allowed_origins and the scalars ---------- */

Test(config, allowed_origins) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c,
                      "allowed_origins = [\n  \"https://chat.example.com\",\n"
                      "  \"http://localhost:3000\",\n]\n",
                      &err),
                 0, "%s", err.message);
    cr_assert_eq(c.allowed_origins_count, 2);
    cr_expect_str_eq(c.allowed_origins[0], "https://chat.example.com");
    cr_expect_str_eq(c.allowed_origins[1], "http://localhost:3000");
    cr_expect_null(c.allowed_origins[2]);
    char *env[] = {"TF_VAR_allowed_origins=[\"https://x.example\"]", NULL};
    cr_assert_eq(config_load_env(&c, env, &err), 0, "%s", err.message);
    cr_assert_eq(c.allowed_origins_count, 1);
    cr_expect_str_eq(c.allowed_origins[0], "https://x.example");
    cr_expect_lt(config_set(&c, "allowed_origins=https://x.example", &err), 0);
    cr_expect_str_eq(err.message, "--set: variable \"allowed_origins\": must be a list of strings");
    /* At most 100, each 1..1024 characters. */
    size_t cap = 101 * 8 + 64;
    char *text = xmalloc(cap);
    size_t n = (size_t)snprintf(text, cap, "allowed_origins = [");
    for (int i = 0; i < 101; i++) n += (size_t)snprintf(text + n, cap - n, "\"o%d\",", i);
    snprintf(text + n, cap - n, "]");
    cr_expect_lt(load(&c, text, &err), 0);
    cr_expect_str_eq(err.message,
                     "test.tfvars:1: variable \"allowed_origins\": At most 100 allowed "
                     "origins are allowed.");
    strcpy(strstr(text, "\"o100\","), "]");
    cr_expect_eq(load(&c, text, &err), 0, "%s", err.message);
    cr_expect_eq(c.allowed_origins_count, 100);
    free(text);
    char *longest = xmalloc(1025 + 32);
    n = (size_t)sprintf(longest, "allowed_origins = [\"");
    memset(longest + n, 'a', 1025);
    strcpy(longest + n + 1025, "\"]");
    cr_expect_lt(load(&c, longest, &err), 0);
    cr_expect(strstr(err.message, "Each allowed origin must be a non-empty string of at most 1024 "
                                  "characters.") != NULL,
              "%s", err.message);
    strcpy(longest + n + 1024, "\"]");
    cr_expect_eq(load(&c, longest, &err), 0, "%s", err.message);
    free(longest);
    config_free(&c);
}

Test(config, protection_scalars_from_file_env_set) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(load(&c,
                      "connection_rate_limit = 7\nconnection_burst_limit = 8\n"
                      "max_connections_per_ip = 9\nconnect_rate_per_ip = 10\n"
                      "connect_burst_per_ip = 11\nauth_failures_per_minute = 12\n"
                      "jwt_leeway_s = 13\nmax_fragmented_bytes = 14\n"
                      "max_control_frames_per_s = 15\nmax_json_depth = 16\n"
                      "jwt_issuer = \"https://issuer.example/\"\njwt_audience = \"wsgate\"\n"
                      "jwt_user_id_claim = \"uid\"\njwt_username_claim = \"preferred_username\"\n",
                      &err),
                 0, "%s", err.message);
    cr_expect_eq(c.connection_rate_limit, 7);
    cr_expect_eq(c.connection_burst_limit, 8);
    cr_expect_eq(c.max_connections_per_ip, 9);
    cr_expect_eq(c.connect_rate_per_ip, 10);
    cr_expect_eq(c.connect_burst_per_ip, 11);
    cr_expect_eq(c.auth_failures_per_minute, 12);
    cr_expect_eq(c.jwt_leeway_s, 13);
    cr_expect_eq(c.max_fragmented_bytes, 14);
    cr_expect_eq(c.max_control_frames_per_s, 15);
    cr_expect_eq(c.max_json_depth, 16);
    cr_expect_str_eq(c.jwt_issuer, "https://issuer.example/");
    cr_expect_str_eq(c.jwt_audience, "wsgate");
    cr_expect_str_eq(c.jwt_user_id_claim, "uid");
    cr_expect_str_eq(c.jwt_username_claim, "preferred_username");
    char *env[] = {"TF_VAR_auth_mode=jwt", "TF_VAR_jwt_algorithm=RS256",
                   "TF_VAR_jwt_public_key_file=/etc/wsgate/jwt.pem",
                   "TF_VAR_allow_plaintext_in_production=true", NULL};
    cr_assert_eq(config_load_env(&c, env, &err), 0, "%s", err.message);
    cr_expect_str_eq(c.auth_mode, "jwt");
    cr_expect_str_eq(c.jwt_algorithm, "RS256");
    cr_expect_str_eq(c.jwt_public_key_file, "/etc/wsgate/jwt.pem");
    cr_expect(c.allow_plaintext_in_production);
    cr_assert_eq(config_set(&c, "tls_cert_file=/etc/wsgate/cert.pem", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "tls_key_file=/etc/wsgate/key.pem", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "allow_demo_auth_in_production=true", &err), 0, "%s", err.message);
    cr_expect_str_eq(c.tls_cert_file, "/etc/wsgate/cert.pem");
    cr_expect_str_eq(c.tls_key_file, "/etc/wsgate/key.pem");
    cr_expect(c.allow_demo_auth_in_production);
    cr_expect_eq(config_validate(&c, &err), 0, "%s", err.message);
    config_free(&c);
}

/* ---------- cross-variable rules ---------- */

/* Load `text` over the defaults and return config_validate's result, with
 * the message in *err. */
static int validate_text(const char *text, wsg_error *err) {
    config c;
    config_init_defaults(&c);
    int rc = load(&c, text, err);
    cr_assert_eq(rc, 0, "%s: %s", text, err->message);
    rc = config_validate(&c, err);
    config_free(&c);
    return rc;
}

Test(config, jwt_needs_its_key) {
    wsg_error err;
    cr_expect_lt(validate_text("auth_mode = \"jwt\"", &err), 0);
    cr_expect_str_eq(err.message, "auth_mode = \"jwt\" with jwt_algorithm = \"HS256\" requires "
                                  "jwt_secret (the shared signing key)");
    cr_expect_lt(validate_text("auth_mode = \"jwt\"\njwt_public_key_file = \"/k.pem\"", &err), 0);
    cr_expect(strstr(err.message, "requires jwt_secret") != NULL, "%s", err.message);
    cr_expect_eq(validate_text("auth_mode = \"jwt\"\njwt_secret = \"s\"", &err), 0, "%s",
                 err.message);
    cr_expect_lt(validate_text("auth_mode = \"jwt\"\njwt_algorithm = \"RS256\"\n"
                               "jwt_secret = \"s\"",
                               &err),
                 0);
    cr_expect_str_eq(err.message, "auth_mode = \"jwt\" with jwt_algorithm = \"RS256\" requires "
                                  "jwt_public_key_file (a PEM public key)");
    cr_expect_lt(validate_text("auth_mode = \"jwt\"\njwt_algorithm = \"ES256\"", &err), 0);
    cr_expect(strstr(err.message, "\"ES256\" requires jwt_public_key_file") != NULL, "%s",
              err.message);
    cr_expect_eq(validate_text("auth_mode = \"jwt\"\njwt_algorithm = \"ES256\"\n"
                               "jwt_public_key_file = \"/k.pem\"",
                               &err),
                 0, "%s", err.message);
    /* The demo authorizer needs neither. */
    cr_expect_eq(validate_text("jwt_algorithm = \"RS256\"", &err), 0, "%s", err.message);
}

Test(config, tls_files_go_together) {
    wsg_error err;
    cr_expect_lt(validate_text("tls_cert_file = \"/c.pem\"", &err), 0);
    cr_expect_str_eq(err.message,
                     "tls_cert_file and tls_key_file must be set together (tls_key_file is empty)");
    cr_expect_lt(validate_text("tls_key_file = \"/k.pem\"", &err), 0);
    cr_expect_str_eq(
        err.message,
        "tls_cert_file and tls_key_file must be set together (tls_cert_file is empty)");
    cr_expect_eq(validate_text("tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"", &err), 0,
                 "%s", err.message);
}

Test(config, production_refuses_demo_auth) {
    wsg_error err;
    static const char *prod_names[] = {"prod", "production", "PROD", "Production"};
    for (size_t i = 0; i < sizeof prod_names / sizeof prod_names[0]; i++) {
        char text[256], want[400];
        snprintf(text, sizeof text, "environment = \"%s\"", prod_names[i]);
        cr_expect_lt(validate_text(text, &err), 0, "%s", text);
        snprintf(want, sizeof want,
                 "environment \"%s\" refuses the demo authorizer (any token starting with valid_ "
                 "is accepted); set auth_mode = \"jwt\" or allow_demo_auth_in_production = true",
                 prod_names[i]);
        cr_expect_str_eq(err.message, want);
        snprintf(text, sizeof text, "environment = \"%s\"\nallow_demo_auth_in_production = true",
                 prod_names[i]);
        cr_expect_eq(validate_text(text, &err), 0, "%s: %s", text, err.message);
        snprintf(text, sizeof text, "environment = \"%s\"\nauth_mode = \"jwt\"\njwt_secret = \"k\"",
                 prod_names[i]);
        cr_expect_eq(validate_text(text, &err), 0, "%s: %s", text, err.message);
    }
    /* Other environments are not production. */
    static const char *others[] = {"dev", "staging", "prod2", "preprod", "production-eu"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "environment = \"%s\"\nlisten = \"0.0.0.0\"", others[i]);
        cr_expect_eq(validate_text(text, &err), 0, "%s: %s", text, err.message);
    }
}

Test(config, production_refuses_plaintext_off_loopback) {
    wsg_error err;
    static const char *base =
        "environment = \"production\"\nallow_demo_auth_in_production = true\n";
    static const char *loopback[] = {"127.0.0.1",      "127.1.2.3", "::1",
                                     "localhost",      "LocalHost", "::ffff:127.0.0.1",
                                     "0:0:0:0:0:0:0:1"};
    for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "%slisten = \"%s\"", base, loopback[i]);
        cr_expect_eq(validate_text(text, &err), 0, "%s: %s", loopback[i], err.message);
    }
    static const char *open_addrs[] = {
        "0.0.0.0",        "::", "10.0.0.5", "128.0.0.1", "chat.example.com", "localhost.example",
        "::ffff:10.0.0.1"};
    for (size_t i = 0; i < sizeof open_addrs / sizeof open_addrs[0]; i++) {
        char text[256], want[400];
        snprintf(text, sizeof text, "%slisten = \"%s\"", base, open_addrs[i]);
        cr_expect_lt(validate_text(text, &err), 0, "%s", open_addrs[i]);
        snprintf(want, sizeof want,
                 "environment \"production\" refuses plain ws:// on the non-loopback listen "
                 "address \"%s\"; set tls_cert_file and tls_key_file, listen on 127.0.0.1, or "
                 "allow_plaintext_in_production = true",
                 open_addrs[i]);
        cr_expect_str_eq(err.message, want);
        /* Either TLS or the escape hatch lets it through. */
        snprintf(text, sizeof text, "%slisten = \"%s\"\nallow_plaintext_in_production = true", base,
                 open_addrs[i]);
        cr_expect_eq(validate_text(text, &err), 0, "%s: %s", open_addrs[i], err.message);
        snprintf(text, sizeof text,
                 "%slisten = \"%s\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"", base,
                 open_addrs[i]);
        cr_expect_eq(validate_text(text, &err), 0, "%s: %s", open_addrs[i], err.message);
    }
    /* Outside production, plain ws:// anywhere is fine. */
    cr_expect_eq(validate_text("listen = \"0.0.0.0\"", &err), 0, "%s", err.message);
    /* With both problems, the authorizer is reported first. */
    cr_expect_lt(validate_text("environment = \"prod\"\nlisten = \"0.0.0.0\"", &err), 0);
    cr_expect(strstr(err.message, "refuses the demo authorizer") != NULL, "%s", err.message);
}

Test(config, help_shows_protection_types) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    config_print_help(m);
    fclose(m);
    cr_expect(strstr(buf, "\nroute_throttling ") != NULL, "%s", buf);
    cr_expect(strstr(buf, "map(object({burst_limit=number,rate_limit=number}))") != NULL, "%s",
              buf);
    static const char *names[] = {"allowed_origins",
                                  "auth_mode",
                                  "jwt_algorithm",
                                  "jwt_secret",
                                  "jwt_leeway_s",
                                  "max_json_depth",
                                  "tls_cert_file",
                                  "allow_demo_auth_in_production",
                                  "allow_plaintext_in_production",
                                  "connect_burst_per_ip",
                                  "auth_failures_per_minute",
                                  "permessage_deflate",
                                  "deflate_server_max_window_bits",
                                  "deflate_client_max_window_bits",
                                  "deflate_level",
                                  "deflate_min_size",
                                  "deflate_client_no_context_takeover"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_expect(strstr(buf, names[i]) != NULL, "%s missing", names[i]);
    free(buf);
}

Test(config, dump_says_unset_secrets_are_not_set) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_assert_eq(config_set(&c, "management_bearer_key=sekrit", &err), 0, "%s", err.message);
    char *text = dump_to_string(&c);
    cr_expect(strstr(text, "\njwt_secret                             = \"\" # (not set)\n") != NULL,
              "%s", text);
    cr_expect(strstr(text, "\nmanagement_bearer_key                  = \"********\"\n") != NULL,
              "%s", text);
    cr_expect(strstr(text, "sekrit") == NULL, "%s", text);
    free(text);
    config_free(&c);
}

/* String variables with a fixed set of values are parsed once into their
 * `_id` enums, by default and by every way of setting them. */
Test(config, enum_variables_are_parsed_once) {
    config c;
    config_init_defaults(&c);
    cr_expect_eq(c.mode_id, CONFIG_MODE_API);
    cr_expect_eq(c.store_sync_id, CONFIG_SYNC_FULL);
    cr_expect_eq(c.auth_mode_id, CONFIG_AUTH_DEMO);
    cr_expect_eq(c.logging_level_id, CONFIG_LOG_INFO);
    wsg_error err;
    cr_assert_eq(config_set(&c, "mode=echo", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "store_sync=normal", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "auth_mode=jwt", &err), 0, "%s", err.message);
    cr_assert_eq(config_set(&c, "logging_level=ERROR", &err), 0, "%s", err.message);
    cr_expect_eq(c.mode_id, CONFIG_MODE_ECHO);
    cr_expect_eq(c.store_sync_id, CONFIG_SYNC_NORMAL);
    cr_expect_eq(c.auth_mode_id, CONFIG_AUTH_JWT);
    cr_expect_eq(c.logging_level_id, CONFIG_LOG_ERROR);
    cr_expect_eq((int)c.logging_level_id, (int)LOG_ERROR);
    /* A refused value leaves both the string and the enum as they were. */
    cr_assert_neq(config_set(&c, "mode=nope", &err), 0);
    cr_expect_eq(c.mode_id, CONFIG_MODE_ECHO);
    cr_expect_str_eq(c.mode, "echo");
    config_free(&c);
}

/* Each kind of failure has its own code from the one list, returned and
 * recorded with its position where the source has one. */
Test(config, failures_carry_their_code_and_position) {
    config c;
    wsg_error err;
    config_init_defaults(&c);
    cr_expect_eq(load(&c, "port = 1\nstage_name = [\n", &err), WSG_E_CONFIG_SYNTAX);
    cr_expect_eq(err.code, WSG_E_CONFIG_SYNTAX);
    cr_expect_eq(err.line, 2, "%s", err.message); /* where the list opens */
    cr_expect_eq(err.column, 14, "%s", err.message);
    cr_expect_str_eq(err.message, "test.tfvars:2:14: unterminated list: missing ']'");
    cr_expect_eq(load(&c, "port = 1\n\nfoo = 2\n", &err), WSG_E_CONFIG_UNKNOWN);
    cr_expect_eq(err.line, 3);
    cr_expect_str_eq(err.message, "test.tfvars:3: unknown variable \"foo\"");
    cr_expect_eq(load(&c, "\nport = 70000\n", &err), WSG_E_CONFIG_VALUE);
    cr_expect_eq(err.line, 2);
    cr_expect(strncmp(err.message, "test.tfvars:2: variable \"port\": ", 32) == 0, "%s",
              err.message);
    cr_expect_eq(config_set(&c, "port", &err), WSG_E_CONFIG_SYNTAX);
    cr_expect_eq(err.line, 0);
    cr_expect_eq(config_set(&c, "nope=1", &err), WSG_E_CONFIG_UNKNOWN);
    cr_expect_eq(config_load_file(&c, "/nonexistent/wsgate.tfvars", &err), WSG_E_IO);
    cr_expect(strncmp(err.message, "cannot read /nonexistent/wsgate.tfvars: ", 40) == 0, "%s",
              err.message);
    cr_expect_eq(validate_text("tls_cert_file = \"/x.pem\"", &err), WSG_E_CONFIG_RULE);
    cr_expect_eq(err.code, WSG_E_CONFIG_RULE);
    config_free(&c);
    char numeric[64];
    cr_expect_eq(config_listen_resolve("", numeric, sizeof numeric, &err), WSG_E_CONFIG_LISTEN);
    cr_expect_str_eq(err.message, "variable \"listen\": the listen address is empty");
}
