from shared.templates import placeholders, placeholders_in, render, render_tree


def test_both_placeholder_styles_render():
    text = "Owes {{amount}} by <<due_date>>; hi {{ first_name }}."
    assert placeholders(text) == {"amount", "due_date", "first_name"}
    assert render(text, {"amount": "5,000 SAR", "due_date": "Jan 15", "first_name": "Ahmed"}) == (
        "Owes 5,000 SAR by Jan 15; hi Ahmed."
    )


def test_runtime_variables_are_not_required_and_unknown_ones_stay():
    assert placeholders("{{system__time}} {{x}}") == {"x"}
    assert render("{{x}} {{y}}", {"x": 1}) == "1 {{y}}"
    assert render("{{flag}}", {"flag": True}) == "true"


def test_nested_values_render():
    tree = {"agent": {"prompt": {"prompt": "Hi <<n>>"}, "list": ["{{n}}", 3]}}
    assert placeholders_in([tree]) == {"n"}
    assert render_tree(tree, {"n": "Sara"}) == {
        "agent": {"prompt": {"prompt": "Hi Sara"}, "list": ["Sara", 3]}
    }


def test_seed_example_renders_exactly():
    template = (
        "You are a collections agent. The customer owes {{amount}} due by {{due_date}}.\n"
        "Be professional and offer payment plan options if the customer cannot pay in full."
    )
    rendered = render(template, {"amount": "5,000 SAR", "due_date": "January 15, 2026"})
    assert rendered == (
        "You are a collections agent. The customer owes 5,000 SAR due by January 15, 2026.\n"
        "Be professional and offer payment plan options if the customer cannot pay in full."
    )
