"""The OpenAI Agents SDK's default model (the Responses API) running a tool loop against us.

    make serve                                   # in another shell
    pip install openai-agents                    # not a dependency of the app
    python examples/agents_tool_loop.py [BASE_URL]

The agent asks the model, the model calls ``get_weather``, the SDK runs it and
sends the result back as a ``function_call_output`` item, the model answers.
"""

from __future__ import annotations

import json
import sys

from agents import Agent, FunctionTool, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI

# The model card's example tool. Spelled out rather than made with
# @function_tool, whose strict schema adds "title" and "additionalProperties":
# the CPU dev model memorized this exact tool definition; gpt-oss-20b takes either.
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "The city and state"}},
    "required": ["location"],
}


async def _get_weather(_ctx, arguments: str) -> str:
    location = json.loads(arguments)["location"]
    print(f"[tool] get_weather({location!r})")
    return json.dumps({"temperature": 18, "unit": "celsius", "condition": "cloudy"})


get_weather = FunctionTool(
    name="get_weather",
    description="Get the current weather for a location",
    params_json_schema=WEATHER_SCHEMA,
    on_invoke_tool=_get_weather,
    strict_json_schema=False,
)


def main() -> None:
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1"
    set_tracing_disabled(True)  # traces go to OpenAI's servers otherwise
    client = AsyncOpenAI(base_url=base_url, api_key="unused")
    agent = Agent(
        name="weather",
        instructions="You are a helpful assistant with access to tools.",
        model=OpenAIResponsesModel(model="gpt-oss-20b", openai_client=client),
        tools=[get_weather],
    )
    result = Runner.run_sync(agent, "What is the weather in London?", max_turns=4)
    for item in result.new_items:
        print(f"[{item.type}]", getattr(item, "raw_item", item))
    print("final output:", result.final_output)


if __name__ == "__main__":
    main()
