<?php
/*
 * The page the application checks request ([[region.app_check]] in the dynamo-failover config,
 * e.g. url = "https://www.example.com/dynamo-failover-health.php", body_contains = "ok").
 * Install it beside wp-config-dynamodb.php in the document root.
 *
 * It answers 200 "ok" when the web server and PHP serve and this server knows its database
 * region (wp-config-dynamodb.php answers 503 when it does not), without loading WordPress or
 * touching a database: when a failover checks a region, that region's servers still point at the
 * failed one until the move reconfigures them, and the check must not fail them for that.
 */
require __DIR__ . '/wp-config-dynamodb.php';
header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
echo "ok\n";
