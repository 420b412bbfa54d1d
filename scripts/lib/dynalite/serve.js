// Starts dynalite (in memory) on 127.0.0.1 at a port of its own choosing and prints
// "listening on PORT" once it accepts connections: the test kit reads the port back, as it does
// for every server it starts. dynalite's own command line cannot take port 0.
//   NODE_PATH=.cache/dynalite/node_modules node serve.js
'use strict';
const dynalite = require('dynalite');

// Tables become ACTIVE at once (1 ms: dynalite reads 0 as "use the 500 ms default").
const server = dynalite({ createTableMs: 1, deleteTableMs: 1, updateTableMs: 1 });
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
