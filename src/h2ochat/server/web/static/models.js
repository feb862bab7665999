// The model selector: each model's display name and description, its prompt examples on an empty
// chat, its token limit for the composer's counter, and what the welcome dialog says about it.

const $ = (id) => document.getElementById(id);

export class ModelPicker {
  constructor({ select, composer, onExample }) {
    Object.assign(this, { select, composer, onExample });
    this.models = [];
  }

  get selected() {
    return this.select.value;
  }

  info(name) {
    return this.models.find((m) => m.id === name);
  }

  // The models as /api/models lists them, with `preferred` chosen when it is one of them.
  show(preferred, models = this.models) {
    this.models = models;
    this.select.replaceChildren(
      ...models.map((m) => {
        const option = new Option(m.displayName, m.id);
        option.title = m.description || "";
        return option;
      }),
    );
    if (preferred && this.info(preferred)) this.select.value = preferred;
    this.describe();
  }

  describe() {
    const model = this.info(this.selected);
    $("model-description").textContent = model ? `${model.displayName}. ${model.description || ""}` : "";
    this.composer.setTokenLimit(model?.maxInputTokens);
    $("welcome-model").textContent = model ? model.displayName : "a language model";
    $("welcome-description").textContent = model?.description || "";
    $("examples").replaceChildren(...(model?.promptExamples || []).map((example) => this.example(example)));
  }

  example({ title, prompt }) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    const strong = document.createElement("strong");
    strong.textContent = title;
    const text = document.createElement("span");
    text.textContent = prompt;
    button.append(strong, text);
    button.addEventListener("click", () => this.onExample(prompt));
    return button;
  }
}
