<?php
/*
 * Include from wp-config.php:  require __DIR__ . '/wp-config-dynamodb.php';
 *
 * Tells the DynamoDB plugin which region to use. The responder of dynamo-failover rewrites
 * /var/lib/dynamo-failover/app/dynamodb.env atomically when traffic moves; reading it on each
 * request costs one small file read and needs no PHP-FPM reload, so every worker switches at once.
 */
$dynamodb_env_file = '/var/lib/dynamo-failover/app/dynamodb.env';
$dynamodb_default  = 'us-east-1'; // the home region, used only if the file cannot be read

$dynamodb_region = $dynamodb_default;
$dynamodb_env = @parse_ini_file($dynamodb_env_file, false, INI_SCANNER_RAW);
if (is_array($dynamodb_env) && !empty($dynamodb_env['DYNAMODB_REGION'])
    && preg_match('/^[a-z0-9-]+$/', $dynamodb_env['DYNAMODB_REGION'])) {
    $dynamodb_region = $dynamodb_env['DYNAMODB_REGION'];
} else {
    error_log("dynamodb: cannot read $dynamodb_env_file, using $dynamodb_default");
}
define('DYNAMODB_REGION', $dynamodb_region);
// For the AWS SDK for PHP: new Aws\DynamoDb\DynamoDbClient(['region' => DYNAMODB_REGION, ...]);
