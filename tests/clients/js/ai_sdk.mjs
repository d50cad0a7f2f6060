// The Vercel AI SDK with ollama-ai-provider-v2 against power serve:
// `node ai_sdk.mjs CASE BASE_URL MODEL`. Prints one JSON object: what the SDK reported.
import { generateText, stepCountIs, streamText, tool } from "ai";
import { createOllama } from "ollama-ai-provider-v2";
import { z } from "zod";

const [kase, baseUrl, model] = process.argv.slice(2);
const ollama = createOllama({ baseURL: `${baseUrl}/api` });
// The provider passes Ollama's own options through; its maxOutputTokens is not num_predict.
const greedy = { ollama: { options: { temperature: 0, seed: 7, num_predict: 8 } } };
globalThis.AI_SDK_LOG_WARNINGS = false;

const usage = (u) => ({ inputTokens: u.inputTokens, outputTokens: u.outputTokens, totalTokens: u.totalTokens });

const cases = {
  async generate() {
    const out = await generateText({ model: ollama(model), prompt: "Name a colour.", providerOptions: greedy });
    return { text: out.text, usage: usage(out.usage), finishReason: out.finishReason };
  },

  async stream() {
    const out = streamText({ model: ollama(model), prompt: "Name a colour.", providerOptions: greedy });
    const deltas = [];
    for await (const delta of out.textStream) deltas.push(delta);
    return { deltas, text: await out.text, usage: usage(await out.usage), finishReason: await out.finishReason };
  },

  async tools() {
    const calls = [];
    const getWeather = tool({
      description: "The weather in a city.",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        calls.push(city);
        return process.env.WEATHER;
      },
    });
    const out = await generateText({
      model: ollama(model),
      prompt: process.env.CALL_WEATHER,
      tools: { get_weather: getWeather },
      stopWhen: stepCountIs(3),
    });
    return {
      text: out.text,
      calls,
      steps: out.steps.map((s) => ({
        finishReason: s.finishReason,
        toolCalls: s.toolCalls.map(({ toolName, input }) => ({ toolName, input })),
        toolResults: s.toolResults.map(({ toolName, output }) => ({ toolName, output })),
        usage: usage(s.usage),
      })),
    };
  },
};

process.stdout.write(JSON.stringify(await cases[kase]()));
