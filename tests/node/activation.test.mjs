// actgrad.v1 from Node.js: @grpc/proto-loader reads proto/actgrad/v1/*.proto, and
// @grpc/grpc-js calls Activate and Gradient on ACTGRAD_TARGET (started by
// tests/integration/test_node_client.py). Tensors are raw little-endian bytes.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "..", "..", "proto");
const target = process.env.ACTGRAD_TARGET;

let client;

before(() => {
  assert.ok(target, "ACTGRAD_TARGET must name a running actgrad server");
  const definition = protoLoader.loadSync(
    ["actgrad/v1/activation.proto", "actgrad/v1/tensor.proto"],
    { includeDirs: [protoRoot], keepCase: true, longs: Number, enums: String, defaults: true },
  );
  const v1 = grpc.loadPackageDefinition(definition).actgrad.v1;
  client = new v1.ActivationService(target, grpc.credentials.createInsecure());
});

after(() => client?.close());

function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30_000);
    client[method](request, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function float32Tensor(values, shape) {
  const data = Buffer.alloc(values.length * 4);
  values.forEach((value, i) => data.writeFloatLE(value, i * 4));
  return { dtype: "DTYPE_FLOAT32", shape, data };
}

function float64Tensor(values, shape) {
  const data = Buffer.alloc(values.length * 8);
  values.forEach((value, i) => data.writeDoubleLE(value, i * 8));
  return { dtype: "DTYPE_FLOAT64", shape, data };
}

function readFloat32(tensor) {
  const out = [];
  for (let i = 0; i < tensor.data.length; i += 4) out.push(tensor.data.readFloatLE(i));
  return out;
}

function readFloat64(tensor) {
  // Copied so that the Float64Array view is aligned whatever the Buffer's offset.
  const bytes = Uint8Array.from(tensor.data);
  return Array.from(new Float64Array(bytes.buffer));
}

function assertClose(actual, expected, rtol, atol) {
  assert.equal(actual.length, expected.length);
  actual.forEach((value, i) => {
    const bound = atol + rtol * Math.abs(expected[i]);
    assert.ok(
      Math.abs(value - expected[i]) <= bound,
      `element ${i}: ${value} vs ${expected[i]} (bound ${bound})`,
    );
  });
}

const xs = [-3, -1.5, -0.25, 0, 0.5, 2];
const sigmoid = (v) => 1 / (1 + Math.exp(-v));
const f32 = (v) => Math.fround(v);

test("Activate sigmoid, float32, shape kept", async () => {
  const response = await call("Activate", {
    function: "sigmoid",
    input: float32Tensor(xs, [2, 3]),
  });
  assert.equal(response.output.dtype, "DTYPE_FLOAT32");
  assert.deepEqual(response.output.shape, [2, 3]);
  assert.equal(response.output.data.length, xs.length * 4);
  // float32: within 2 ulps of the correctly rounded value.
  assertClose(readFloat32(response.output), xs.map((v) => f32(sigmoid(f32(v)))), 2.4e-7, 0);
});

test("Activate leaky_relu with a parameter, float64", async () => {
  const response = await call("Activate", {
    function: "leaky_relu",
    input: float64Tensor(xs, [6]),
    params: { alpha: { number: 0.2 } },
  });
  assert.equal(response.output.dtype, "DTYPE_FLOAT64");
  assert.deepEqual(readFloat64(response.output), xs.map((v) => (v >= 0 ? v : 0.2 * v)));
});

test("Gradient tanh with grad_output, float64", async () => {
  const g = [1, 2, 0.5, -1, 3, 0.25];
  const response = await call("Gradient", {
    function: "tanh",
    input: float64Tensor(xs, [3, 2]),
    grad_output: float64Tensor(g, [3, 2]),
  });
  assert.deepEqual(response.grad_input.shape, [3, 2]);
  const expected = xs.map((v, i) => g[i] * (1 - Math.tanh(v) ** 2));
  assertClose(readFloat64(response.grad_input), expected, 1e-14, 1e-300);
});

test("Gradient prelu returns the slope's gradient", async () => {
  const x = [-2, -1, 1, 2];
  const response = await call("Gradient", {
    function: "prelu",
    input: float32Tensor(x, [2, 2]),
    params: { slope: { tensor: float32Tensor([0.25, 0.5], [2]) } },
  });
  assert.deepEqual(readFloat32(response.grad_input), [0.25, 0.5, 1, 1]);
  const slope = response.grad_params.slope;
  assert.deepEqual(slope.shape, [2]);
  assert.deepEqual(readFloat32(slope), [-2, -1]);
});

test("an unknown function is NOT_FOUND", async () => {
  await assert.rejects(
    call("Activate", { function: "no_such_function", input: float32Tensor([1], [1]) }),
    (error) => error.code === grpc.status.NOT_FOUND,
  );
});
