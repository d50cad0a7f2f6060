// @langchain/ollama against power serve: `node langchain.mjs CASE BASE_URL MODEL`.
// Prints one JSON object: what the client reported, for tests/clients/test_js_clients.py.
import { ChatOllama, OllamaEmbeddings } from "@langchain/ollama";
import { HumanMessage, ToolMessage } from "@langchain/core/messages";

const [kase, baseUrl, model] = process.argv.slice(2);

const cases = {
  async chat() {
    const llm = new ChatOllama({ model, baseUrl, temperature: 0, seed: 7, numPredict: 8 });
    const whole = await llm.invoke("Name a colour.");
    let streamed;
    for await (const chunk of await llm.stream("Name a colour.")) {
      streamed = streamed === undefined ? chunk : streamed.concat(chunk);
    }
    const view = (m) => ({
      content: m.content,
      usage: m.usage_metadata,
      done_reason: m.response_metadata.done_reason,
    });
    return { whole: view(whole), streamed: view(streamed) };
  },

  async tools() {
    const weather = {
      type: "function",
      function: {
        name: "get_weather",
        description: "The weather in a city.",
        parameters: JSON.parse(process.env.WEATHER_SCHEMA),
      },
    };
    const llm = new ChatOllama({ model, baseUrl }).bindTools([weather]);
    const history = [new HumanMessage(process.env.CALL_WEATHER)];
    const asked = await llm.invoke(history);
    const [call] = asked.tool_calls;
    history.push(asked, new ToolMessage({ content: process.env.WEATHER, tool_call_id: call.id }));
    const answer = await llm.invoke(history);
    return {
      tool_calls: asked.tool_calls.map(({ name, args }) => ({ name, args })),
      asked_usage: asked.usage_metadata,
      answer: answer.content,
      answer_usage: answer.usage_metadata,
    };
  },

  async embeddings() {
    const emb = new OllamaEmbeddings({ model, baseUrl });
    return {
      documents: await emb.embedDocuments(["red", "a green leaf"]),
      query: await emb.embedQuery("red"),
    };
  },
};

process.stdout.write(JSON.stringify(await cases[kase]()));
