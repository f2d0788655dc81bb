// PowerShell syntax check without PowerShell: parse each .ps1 with tree-sitter-powershell and
// report every ERROR or MISSING node as file:line:column. Exit 1 when any file has one.
//   node .ci/ps1check/check.mjs FILE.ps1...
import Parser from 'tree-sitter';
import PowerShell from 'tree-sitter-powershell/bindings/node/index.js';
import { readFileSync } from 'node:fs';

const parser = new Parser();
parser.setLanguage(PowerShell);
let problems = 0;
for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, 'utf8');
  // The binding reads the input in 32 KiB chunks unless told the size.
  const tree = parser.parse(text, undefined, { bufferSize: Math.max(32 * 1024, text.length * 4 + 1) });
  const walk = (node) => {
    if (node.type === 'ERROR' || node.isMissing) {
      const where = `${file}:${node.startPosition.row + 1}:${node.startPosition.column + 1}`;
      const what = node.isMissing ? `missing ${node.type}` : 'syntax error';
      console.log(`${where}: ${what}: ${node.text.split('\n')[0].slice(0, 80)}`);
      problems += 1;
    }
    for (const child of node.children) walk(child);
  };
  walk(tree.rootNode);
}
process.exit(problems ? 1 : 0);
