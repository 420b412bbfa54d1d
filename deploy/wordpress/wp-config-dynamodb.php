<?php
/*
 * Include from wp-config.php, before anything uses the region:
 *     require_once __DIR__ . '/wp-config-dynamodb.php';
 *
 * Defines DYNAMODB_REGION (and DYNAMO_FAILOVER_EPOCH, when the file has it) from the env file this
 * server's dynamo-failover agent writes (agent.env_file in /etc/dynamo-failover/agent.toml). The
 * agent replaces the file atomically when traffic moves, so reading it on every request (one small
 * file) needs no PHP-FPM reload: every worker follows at once.
 *
 * There is deliberately NO default region. A missing or unreadable file, or a missing or malformed
 * DYNAMODB_REGION, means this server does not know where the data is; guessing the home region
 * would read and write a region that traffic may have left because it is down. Such a request is
 * logged (error_log) and answered with a 503 page instead (exit status 1 on the command line:
 * wp-cli, cron), so the load balancer's health check takes the server out of rotation.
 */
$dynamodb_env_file = '/etc/wordpress/dynamodb/dynamodb.env';

if (!function_exists('dynamodb_region_not_configured')) {
    function dynamodb_region_not_configured($why)
    {
        error_log("dynamodb: the database region is not configured: $why");
        if (PHP_SAPI === 'cli') {
            fwrite(STDERR, "the database region is not configured: $why\n");
            exit(1);
        }
        if (!headers_sent()) {
            http_response_code(503);
            header('Content-Type: text/html; charset=utf-8');
            header('Cache-Control: no-store');
            header('Retry-After: 30');
        }
        // The reason goes to the log only: it names paths.
        echo "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>503 Service Unavailable</title></head>\n"
            . "<body><h1>Service Unavailable</h1><p>The database region is not configured on this server."
            . " Please try again in a moment.</p></body></html>\n";
        exit;
    }
}

$dynamodb_env_text = @file_get_contents($dynamodb_env_file);
if ($dynamodb_env_text === false) {
    $dynamodb_error = error_get_last();
    dynamodb_region_not_configured("cannot read $dynamodb_env_file"
        . ($dynamodb_error ? ': ' . $dynamodb_error['message'] : ''));
}
// KEY=value lines, as the agent writes them: `#` comments, an optional `export `, optional quotes;
// the last assignment of a key wins.
$dynamodb_env = array();
foreach (preg_split('/\r?\n/', $dynamodb_env_text) as $dynamodb_line) {
    $dynamodb_line = trim($dynamodb_line);
    if (strncmp($dynamodb_line, 'export ', 7) === 0) {
        $dynamodb_line = ltrim(substr($dynamodb_line, 7));
    }
    $dynamodb_eq = strpos($dynamodb_line, '=');
    if ($dynamodb_line === '' || $dynamodb_line[0] === '#' || $dynamodb_eq === false) {
        continue;
    }
    $dynamodb_env[substr($dynamodb_line, 0, $dynamodb_eq)] = trim(trim(substr($dynamodb_line, $dynamodb_eq + 1)), "\"'");
}
if (!isset($dynamodb_env['DYNAMODB_REGION']) || $dynamodb_env['DYNAMODB_REGION'] === '') {
    dynamodb_region_not_configured("$dynamodb_env_file has no DYNAMODB_REGION");
}
// An AWS region name: us-east-1, eu-west-2, ap-southeast-1, us-gov-west-1, ...
if (!preg_match('/^[a-z]{2}(-[a-z]+)+-[0-9]+$/', $dynamodb_env['DYNAMODB_REGION'])) {
    dynamodb_region_not_configured("$dynamodb_env_file has an invalid DYNAMODB_REGION: "
        . json_encode($dynamodb_env['DYNAMODB_REGION']));
}
define('DYNAMODB_REGION', $dynamodb_env['DYNAMODB_REGION']);
if (isset($dynamodb_env['DYNAMO_FAILOVER_EPOCH']) && ctype_digit($dynamodb_env['DYNAMO_FAILOVER_EPOCH'])) {
    define('DYNAMO_FAILOVER_EPOCH', (int) $dynamodb_env['DYNAMO_FAILOVER_EPOCH']);
}
unset($dynamodb_env_text, $dynamodb_env, $dynamodb_line, $dynamodb_eq, $dynamodb_error);
// For the AWS SDK for PHP: new Aws\DynamoDb\DynamoDbClient(['region' => DYNAMODB_REGION, ...]);
