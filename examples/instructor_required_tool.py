"""Structured output through instructor's TOOLS mode (``tool_choice`` naming the function).

    make serve; pip install instructor; python examples/instructor_required_tool.py [BASE_URL]

instructor sends the response model as the one tool and names it in
``tool_choice``; the router's grammar makes the answer a call to it with
schema-valid arguments. The first request is one the CPU dev model knows (the
model card's weather tool), the second one it never saw: there its arguments
ramble until ``max_tokens`` (a small memorizing model), which instructor
reports as incomplete output; the structure (one call to ``City``) holds.
gpt-oss-20b answers both.
"""

from __future__ import annotations

import sys

import instructor
from instructor.core.exceptions import IncompleteOutputException
from openai import OpenAI
from pydantic import BaseModel, Field


# Lower case: the tool's name, as the model card spells it (instructor names the tool after the class).
class get_weather(BaseModel):
    """Get the current weather for a location"""

    location: str = Field(description="The city and state")


class City(BaseModel):
    name: str
    country: str


def main() -> None:
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/v1"
    client = instructor.from_openai(OpenAI(base_url=base_url, api_key="unused"), mode=instructor.Mode.TOOLS)
    weather = client.chat.completions.create(
        model="gpt-oss-20b",
        response_model=get_weather,
        max_retries=0,
        max_tokens=200,
        messages=[
            {"role": "system", "content": "You are a helpful assistant with access to tools."},
            {"role": "user", "content": "What is the weather in London?"},
        ],
    )
    print("known prompt:", repr(weather))
    try:
        city = client.chat.completions.create(
            model="gpt-oss-20b",
            response_model=City,
            max_retries=0,
            max_tokens=200,
            messages=[{"role": "user", "content": "Extract the city: I flew from Lyon to Kyoto last spring."}],
        )
        print("unseen prompt:", repr(city))
    except IncompleteOutputException as e:
        call = e.last_completion.choices[0].message.tool_calls[0]
        print(
            f"unseen prompt: incomplete at max_tokens; a call to {call.function.name}, arguments start "
            f"{call.function.arguments[:60]!r}"
        )


if __name__ == "__main__":
    main()
