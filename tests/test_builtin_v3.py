"""Built-in model v3 (issue 27): the prompt splitter, the endless world, the causal tokenizer and the
chunk-causal denoiser. CPU only and small: tiny configurations, a few frames."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from generator.builtin import world
from generator.builtin.text import object_phrases, parse_objects


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ phrasing
def asked(prompt):
    return [(o.colour, o.shape, o.direction) for o in parse_objects(prompt)]


@pytest.mark.parametrize("prompt, objects", [
    # joined by words that appear in no list of the code
    ("a red circle going left with a blue square going up", [("red", "circle", "left"), ("blue", "square", "up")]),
    ("green triangle moving right plus a yellow circle moving down",
     [("green", "triangle", "right"), ("yellow", "circle", "down")]),
    # the direction before the object, the colour after the shape
    ("left-moving green circle next to an upward white square", [("green", "circle", "left"), ("white", "square", "up")]),
    ("a circle in magenta going right together with a square in yellow going left",
     [("magenta", "circle", "right"), ("yellow", "square", "left")]),
    # three objects, and one
    ("white circle going down, yellow square going right, cyan triangle going left",
     [("white", "circle", "down"), ("yellow", "square", "right"), ("cyan", "triangle", "left")]),
    ("there is a red circle and it travels left", [("red", "circle", "left")]),
])
def test_objects_are_split_by_their_colour_and_shape_mentions(prompt, objects):
    assert asked(prompt) == objects
    phrases = object_phrases(prompt)
    assert len(phrases) == len(objects)
    if len(objects) > 1:
        assert phrases == [f"a {c} {s} moving {d}" for c, s, d in objects]


def test_every_caption_of_the_world_splits_into_its_objects_with_their_own_attributes():
    rng = random.Random(4)
    for i in range(300):
        scene = world.sample_scene(rng, 16, two_shapes_prob=0.5)
        prompt = world.caption(scene, rng, held_out=i % 2 == 0)
        assert asked(prompt) == [(m.colour, m.shape, m.direction) for m in scene], prompt


def test_a_prompt_without_objects_or_with_more_than_three_stays_usable():
    assert object_phrases("") == [""]
    assert object_phrases("something abstract") == ["something abstract"]
    four = "a red circle, a blue square, a green triangle and a white circle, all moving left"
    assert len(parse_objects(four)) == 3
    steer = parse_objects("now the red circle stops")
    assert (steer[0].colour, steer[0].shape, steer[0].motion) == ("red", "circle", "stop")


# ------------------------------------------------------------------ the endless world
def test_shapes_bounce_off_the_edges_and_stay_in_view_forever():
    rng = random.Random(1)
    scenes = [world.sample_scene(rng, 16, two_shapes_prob=0.5) for _ in range(4)]
    clips = world.render(scenes, 240, 32, bounce=True)  # 30 s at 8 fps
    visible = (clips.amax(dim=1) > -0.45).flatten(2).sum(-1)  # B x T shape pixels
    assert (visible > 0).all()
    straight = world.render(scenes, 240, 32)  # the v2 world: they leave
    assert ((straight.amax(dim=1) > -0.45).flatten(2).sum(-1) == 0).any()
    path = world.simulate([world.ShapeMotion("red", "circle", "right", 8, 50, 32, 2.0)], 12)[0]
    xs = [x for x, _ in path]
    assert max(xs) <= 56 and xs[-1] < xs[3]  # turned back at the right edge


def test_bounce_leaves_the_v2_world_unchanged_while_paths_stay_inside():
    rng = random.Random(2)
    scenes = [world.sample_scene(rng, 16, two_shapes_prob=0.5) for _ in range(8)]
    assert (world.render(scenes, 16, 64) - world.render(scenes, 16, 64, bounce=True)).abs().max() < 1e-4


def test_events_stop_turn_and_speed_up_a_shape():
    m = world.ShapeMotion("red", "circle", "right", 8, 20, 32, 1.5)
    events = [world.Event(4, 0, "go", "up"), world.Event(8, 0, "stop"), world.Event(10, 0, "go", "left"),
              world.Event(12, 0, "faster")]
    path = world.simulate([m], 16, events)[0]
    (x3, y3), (x7, y7), (x9, y9), (x11, _), (x12, _), (x15, _) = (path[i] for i in (3, 7, 9, 11, 12, 15))
    assert x7 == x3 and y7 < y3  # turned up at frame 4
    assert path[8] == (x9, y9) == path[9]  # stopped
    assert x11 < x9  # going left
    assert (x12 - x15) / 3 == pytest.approx(1.5 * world.SPEED_UP)  # faster
